// Pre-tokenizer matchers (see pre_tokenizer.h). Each regex stage is a function
// returning the length of the match that starts at `pos` inside the piece
// [pos, end); the alternatives are tried in the regex's order, so the first
// one that matches wins even when a later one would match more, as in any
// backtracking regex engine. The GPT-2/LLaMA-3/Qwen2 patterns match something
// at every position (their last alternatives cover whitespace and every other
// class), so they cut a piece into consecutive matches with no gaps.
#include "engine/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <cassert>

#include "engine/tokenizer/unicode_text.h"

namespace polar {
namespace {

using tokenizer_internal::kCpLetter;
using tokenizer_internal::kCpNumber;
using tokenizer_internal::kCpPunctuation;
using tokenizer_internal::kCpWhitespace;

// The view of one piece that a matcher sees: positions at or past `end` read
// as "no character", which makes look-ahead stop at the piece boundary.
struct Piece {
  std::span<const uint32_t> cps;
  std::span<const uint8_t> cls;
  size_t end;

  bool In(size_t i) const { return i < end; }
  bool Letter(size_t i) const { return In(i) && (cls[i] & kCpLetter); }
  bool Number(size_t i) const { return In(i) && (cls[i] & kCpNumber); }
  bool Space(size_t i) const { return In(i) && (cls[i] & kCpWhitespace); }
  // [^\s\p{L}\p{N}]
  bool Other(size_t i) const { return In(i) && !(cls[i] & (kCpLetter | kCpNumber | kCpWhitespace)); }
  bool Newline(size_t i) const { return In(i) && (cps[i] == '\r' || cps[i] == '\n'); }
  uint32_t At(size_t i) const { return In(i) ? cps[i] : 0; }

  template <typename Pred>
  size_t RunEnd(size_t i, Pred pred) const {
    while (pred(i)) ++i;
    return i;
  }
};

uint32_t AsciiLower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d (optionally ASCII case-insensitive); 0 if none.
size_t MatchContraction(const Piece& p, size_t pos, bool ignore_case) {
  if (p.At(pos) != '\'' || !p.In(pos + 1)) return 0;
  auto fold = [&](size_t i) { return ignore_case ? AsciiLower(p.At(i)) : p.At(i); };
  const uint32_t a = fold(pos + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (!p.In(pos + 2)) return 0;
  const uint32_t b = fold(pos + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// \s+(?!\S)|\s+ at a whitespace position: a run followed by a non-space keeps
// its last whitespace for the next word (" word"), unless it is the only one.
size_t MatchTrailingSpaces(const Piece& p, size_t pos) {
  const size_t run_end = p.RunEnd(pos, [&](size_t i) { return p.Space(i); });
  const size_t run = run_end - pos;
  if (run > 1 && p.In(run_end)) return run - 1;
  return run;
}

size_t MatchGpt2(const Piece& p, size_t pos) {
  if (size_t n = MatchContraction(p, pos, /*ignore_case=*/false)) return n;
  // An optional leading space joins a following letter, number or other run.
  const size_t body = (p.At(pos) == ' ' && !p.Space(pos + 1) && p.In(pos + 1)) ? pos + 1 : pos;
  if (p.Letter(body)) return p.RunEnd(body, [&](size_t i) { return p.Letter(i); }) - pos;
  if (p.Number(body)) return p.RunEnd(body, [&](size_t i) { return p.Number(i); }) - pos;
  if (p.Other(body)) return p.RunEnd(body, [&](size_t i) { return p.Other(i); }) - pos;
  return MatchTrailingSpaces(p, pos);
}

size_t MatchLlama3OrQwen2(const Piece& p, size_t pos, size_t max_digits) {
  if (size_t n = MatchContraction(p, pos, /*ignore_case=*/true)) return n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (p.Letter(pos)) return p.RunEnd(pos, [&](size_t i) { return p.Letter(i); }) - pos;
  if (!p.Newline(pos) && !p.Number(pos) && p.Letter(pos + 1)) {
    return p.RunEnd(pos + 1, [&](size_t i) { return p.Letter(i); }) - pos;
  }
  // \p{N}{1,max_digits}
  if (p.Number(pos)) {
    size_t n = 1;
    while (n < max_digits && p.Number(pos + n)) ++n;
    return n;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  const size_t body = (p.At(pos) == ' ' && p.Other(pos + 1)) ? pos + 1 : pos;
  if (p.Other(body)) {
    const size_t others_end = p.RunEnd(body, [&](size_t i) { return p.Other(i); });
    return p.RunEnd(others_end, [&](size_t i) { return p.Newline(i); }) - pos;
  }
  // \s*[\r\n]+ : the longest whitespace prefix that ends in \r or \n.
  const size_t run_end = p.RunEnd(pos, [&](size_t i) { return p.Space(i); });
  for (size_t i = run_end; i > pos; --i) {
    if (p.Newline(i - 1)) return i - pos;
  }
  return MatchTrailingSpaces(p, pos);
}

bool IsPunctuationRunChar(const Piece& p, size_t i) {
  if (!p.In(i)) return false;
  const uint32_t c = p.cps[i];
  return (p.cls[i] & kCpPunctuation) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
         c == '^' || c == '~' || c == '|';
}

bool IsAsciiDigit(const Piece& p, size_t i) { return p.In(i) && p.cps[i] >= '0' && p.cps[i] <= '9'; }

// Length of the stage's match at `pos`, 0 if none (only the isolate stages
// can fail to match).
size_t MatchAt(PreTokenizerStage stage, const Piece& p, size_t pos) {
  switch (stage) {
    case PreTokenizerStage::kIsolateDigits:
      return p.Number(pos) ? 1 : 0;
    case PreTokenizerStage::kGpt2:
      return MatchGpt2(p, pos);
    case PreTokenizerStage::kLlama3:
      return MatchLlama3OrQwen2(p, pos, 3);
    case PreTokenizerStage::kQwen2:
      return MatchLlama3OrQwen2(p, pos, 1);
    case PreTokenizerStage::kIsolatePunctuationRuns:
      return p.RunEnd(pos, [&](size_t i) { return IsPunctuationRunChar(p, i); }) - pos;
    case PreTokenizerStage::kIsolateNumberRuns:
      return p.RunEnd(pos, [&](size_t i) { return p.Number(i); }) - pos;
    case PreTokenizerStage::kIsolateAsciiDigitTriples:
      return IsAsciiDigit(p, pos) && IsAsciiDigit(p, pos + 1) && IsAsciiDigit(p, pos + 2) ? 3 : 0;
  }
  return 0;
}

// Splits [begin, end) into matches and the unmatched gaps between them.
void SplitPiece(PreTokenizerStage stage, std::span<const uint32_t> cps, std::span<const uint8_t> cls,
                size_t begin, size_t end, std::vector<std::pair<size_t, size_t>>* out) {
  const Piece p{cps, cls, end};
  size_t gap = begin;
  size_t pos = begin;
  while (pos < end) {
    const size_t n = MatchAt(stage, p, pos);
    if (n == 0) {
      ++pos;
      continue;
    }
    assert(pos + n <= end);
    if (gap < pos) out->emplace_back(gap, pos);
    out->emplace_back(pos, pos + n);
    pos += n;
    gap = pos;
  }
  if (gap < end) out->emplace_back(gap, end);
}

}  // namespace

std::string_view PreTokenizerStageName(PreTokenizerStage stage) {
  switch (stage) {
    case PreTokenizerStage::kIsolateDigits: return "digits";
    case PreTokenizerStage::kGpt2: return "gpt2";
    case PreTokenizerStage::kLlama3: return "llama3";
    case PreTokenizerStage::kQwen2: return "qwen2";
    case PreTokenizerStage::kIsolatePunctuationRuns: return "punctuation-runs";
    case PreTokenizerStage::kIsolateNumberRuns: return "number-runs";
    case PreTokenizerStage::kIsolateAsciiDigitTriples: return "digit-triples";
  }
  return "?";
}

void PreTokenize(std::span<const PreTokenizerStage> stages, std::span<const uint32_t> cps,
                 std::span<const uint8_t> classes, std::vector<std::pair<size_t, size_t>>* pieces) {
  assert(cps.size() == classes.size());
  pieces->clear();
  if (cps.empty()) return;
  pieces->emplace_back(0, cps.size());
  std::vector<std::pair<size_t, size_t>> next;
  for (PreTokenizerStage stage : stages) {
    next.clear();
    next.reserve(pieces->size() * 2);
    for (const auto& [begin, end] : *pieces) SplitPiece(stage, cps, classes, begin, end, &next);
    pieces->swap(next);
  }
}

}  // namespace polar
