// Byte-level BPE tokenizer (see tokenizer.h).
#include "engine/tokenizer/tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/gguf_file.h"
#include "engine/tokenizer/unicode_text.h"

namespace polar {
namespace {

using tokenizer_internal::AppendUtf8;
using tokenizer_internal::ByteCharsUtf8;
using tokenizer_internal::ByteLevelToBytes;
using tokenizer_internal::ClassifyCodepoint;
using tokenizer_internal::DecodeUtf8Lenient;

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr uint8_t kStripLeft = 1;
constexpr uint8_t kStripRight = 2;

// Tokens llama.cpp ends generation on because of their text (its
// llama-vocab.cpp keeps the same list; the token type is forced to control).
constexpr std::string_view kEndOfGenerationNames[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", "</s>",
};
// Fill-in-the-middle tokens, found by name when the GGUF does not give them.
constexpr std::string_view kFimPadNames[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::string_view kFimRepNames[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepNames[] = {"<|file_sep|>"};

bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// NFC via ICU (only tokenizer.json files that ask for it). ICU reads invalid
// UTF-8 as U+FFFD, which is what the pre-tokenizer would do anyway.
void NormalizeNfc(std::string_view text, std::string* out) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || nfc == nullptr) {
    out->assign(text);
    return;
  }
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size()));
  const icu::UnicodeString normalized = nfc->normalize(in, status);
  out->clear();
  if (U_FAILURE(status)) {
    out->assign(text);
    return;
  }
  normalized.toUTF8String(*out);
}

}  // namespace

struct Tokenizer::Scratch {
  std::string fragment;  // a fragment after normalization / prefix space
  std::vector<uint32_t> cps;
  std::vector<uint8_t> classes;
  std::vector<std::pair<size_t, size_t>> words;
  std::string word;  // one word's UTF-8 bytes
  std::string spelled;

  struct Symbol {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left, right;  // symbol indices
    int32_t left_id, right_id, result;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  absl::StatusOr<TokenizerData> data = TokenizerDataFromGguf(gguf);
  if (!data.ok()) return data.status();
  return FromData(std::move(*data));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromTokenizerJson(const std::string& json_text,
                                                                       const std::string& source,
                                                                       const std::string& tokenizer_config_json) {
  absl::StatusOr<TokenizerData> data = TokenizerDataFromJson(json_text, source, tokenizer_config_json);
  if (!data.ok()) return data.status();
  return FromData(std::move(*data));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromData(TokenizerData data) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer(std::move(data)));
  if (absl::Status s = tokenizer->Build(); !s.ok()) return s;
  return tokenizer;
}

absl::Status Tokenizer::Build() {
  const std::string& src = data_.source;
  const size_t n = data_.tokens.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": vocabulary size ", n, " is invalid"));
  }
  if (data_.types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": ", data_.types.size(), " token types for ", n, " tokens"));
  }
  const std::pair<const char*, int32_t> ids[] = {
      {"bos", data_.bos_id},       {"eos", data_.eos_id},         {"unk", data_.unk_id},
      {"pad", data_.pad_id},       {"eot", data_.eot_id},         {"eom", data_.eom_id},
      {"fim_pad", data_.fim_pad_id}, {"fim_rep", data_.fim_rep_id}, {"fim_sep", data_.fim_sep_id},
  };
  for (const auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": ", name, " token id ", id, " is outside the vocabulary"));
    }
  }

  token_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // Later duplicates win, as in llama.cpp's token_to_id.
    if (!data_.tokens[i].empty() && data_.types[i] != TokenType::kUndefined) {
      token_ids_[data_.tokens[i]] = static_cast<int32_t>(i);
    }
  }

  // End of generation. Tokens that end generation because of their name are
  // forced to control type, as llama.cpp does, so they are parsed and
  // skipped like the special tokens they are.
  std::vector<int32_t> named;
  for (std::string_view name : kEndOfGenerationNames) {
    if (std::optional<int32_t> id = TokenId(name)) named.push_back(*id);
  }
  auto find_fim = [&](int32_t given, std::span<const std::string_view> names) -> int32_t {
    if (given >= 0) return given;
    int32_t best = -1;
    for (std::string_view name : names) {
      if (std::optional<int32_t> id = TokenId(name); id && (best < 0 || *id < best)) best = *id;
    }
    return best;
  };
  for (int32_t id : {find_fim(data_.fim_pad_id, kFimPadNames), find_fim(data_.fim_rep_id, kFimRepNames),
                     find_fim(data_.fim_sep_id, kFimSepNames)}) {
    if (id >= 0) named.push_back(id);
  }
  for (int32_t id : named) data_.types[id] = TokenType::kControl;
  std::vector<int32_t> eog = std::move(named);
  for (int32_t id : {data_.eos_id, data_.eot_id, data_.eom_id}) {
    if (id >= 0) eog.push_back(id);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  eog_ids_ = std::move(eog);

  // Decoded bytes of every token.
  pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = data_.tokens[i];
    switch (data_.types[i]) {
      case TokenType::kNormal:
      case TokenType::kByte: {
        // HF's ByteLevel decoder keeps a token's own bytes if any character
        // is outside the byte alphabet.
        std::string bytes;
        pieces_[i] = ByteLevelToBytes(text, &bytes) ? std::move(bytes) : text;
        break;
      }
      case TokenType::kControl:
      case TokenType::kUserDefined:
      case TokenType::kUnknown:
        pieces_[i] = text;
        break;
      case TokenType::kUnused:
      case TokenType::kUndefined:
        break;
    }
  }

  // Bytes whose single-symbol token is missing (SmolLM2 lacks 21, e.g.
  // 0x04, 0xC0, 0xF5-0xFF) cannot be spelled: they are dropped, or become
  // unk where a tokenizer.json asks for it, as llama.cpp and HF do.
  for (int b = 0; b < 256; ++b) byte_tokens_[b] = TokenId(ByteCharsUtf8()[b]).value_or(-1);
  if (data_.unk_for_unknown_bytes && data_.unk_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": unknown bytes map to unk, but there is no unk token"));
  }

  merges_.reserve(data_.merges.size());
  for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
    const auto& [left, right] = data_.merges[rank];
    const std::optional<int32_t> l = TokenId(left);
    const std::optional<int32_t> r = TokenId(right);
    const std::optional<int32_t> result = TokenId(left + right);
    if (!l || !r || !result) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": merge ", rank, " ('", left, "' + '", right,
                                                     "'): ", !l ? "left part" : !r ? "right part" : "result",
                                                     " is not in the vocabulary"));
    }
    // The first (highest-priority) occurrence of a pair wins.
    merges_.try_emplace(PairKey(*l, *r), Merge{static_cast<int32_t>(rank), *result});
  }

  strip_.assign(n, 0);
  for (int32_t id : data_.lstrip_ids) {
    if (id < 0 || static_cast<size_t>(id) >= n) return absl::InvalidArgumentError(absl::StrCat(src, ": lstrip id"));
    strip_[id] |= kStripLeft;
  }
  for (int32_t id : data_.rstrip_ids) {
    if (id < 0 || static_cast<size_t>(id) >= n) return absl::InvalidArgumentError(absl::StrCat(src, ": rstrip id"));
    strip_[id] |= kStripRight;
  }
  for (size_t i = 0; i < n; ++i) {
    const TokenType t = data_.types[i];
    if ((t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) &&
        !data_.tokens[i].empty()) {
      special_tokens_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(), [&](int32_t a, int32_t b) {
    return data_.tokens[a].size() > data_.tokens[b].size();
  });
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view text) const {
  const auto it = token_ids_.find(Sv(text));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return data_.tokens[id];
}

std::string_view Tokenizer::TokenPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return pieces_[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return data_.types[id];
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const TokenType t = token_type(id);
  return t == TokenType::kControl || t == TokenType::kUnknown;
}

const Tokenizer::Merge* Tokenizer::FindMerge(int32_t left, int32_t right) const {
  const auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

// llama.cpp's partition: for each special token, longest first, cut every raw
// fragment at each occurrence, left to right. (HF instead matches all added
// tokens at once, leftmost-longest; the two differ only for overlapping
// special tokens.)
void Tokenizer::SplitSpecial(std::string_view text, bool parse_special, std::vector<Fragment>* fragments) const {
  fragments->clear();
  if (text.empty()) return;
  fragments->push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (int32_t id : special_tokens_) {
    const TokenType type = data_.types[id];
    if (!parse_special && type != TokenType::kUserDefined) continue;
    const std::string& token = data_.tokens[id];
    next.clear();
    for (const Fragment& f : *fragments) {
      if (f.token >= 0 || f.end - f.begin < token.size()) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.begin;
      while (pos < f.end) {
        const size_t hit = text.substr(0, f.end).find(token, pos);
        if (hit == std::string_view::npos) break;
        size_t left_end = hit;
        if (strip_[id] & kStripLeft) {
          while (left_end > pos && IsAsciiSpace(text[left_end - 1])) --left_end;
        }
        if (left_end > pos) next.push_back({-1, pos, left_end});
        next.push_back({id, hit, hit + token.size()});
        pos = hit + token.size();
        if (strip_[id] & kStripRight) {
          while (pos < f.end && IsAsciiSpace(text[pos])) ++pos;
        }
      }
      if (pos < f.end) next.push_back({-1, pos, f.end});
    }
    fragments->swap(next);
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && data_.add_bos && data_.bos_id >= 0) out.push_back(data_.bos_id);
  std::vector<Fragment> fragments;
  SplitSpecial(text, parse_special, &fragments);
  Scratch scratch;
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
    } else {
      EncodeFragment(text.substr(f.begin, f.end - f.begin), &scratch, &out);
    }
  }
  if (add_special && data_.add_eos && data_.eos_id >= 0) out.push_back(data_.eos_id);
  return out;
}

void Tokenizer::EncodeFragment(std::string_view text, Scratch* s, std::vector<int32_t>* out) const {
  if (data_.normalize_nfc || data_.add_prefix_space) {
    if (data_.normalize_nfc) {
      NormalizeNfc(text, &s->fragment);
    } else {
      s->fragment.assign(text);
    }
    if (data_.add_prefix_space && !s->fragment.empty() && s->fragment[0] != ' ') s->fragment.insert(0, 1, ' ');
    text = s->fragment;
  }
  DecodeUtf8Lenient(text, &s->cps);
  s->classes.resize(s->cps.size());
  for (size_t i = 0; i < s->cps.size(); ++i) s->classes[i] = ClassifyCodepoint(s->cps[i]);
  PreTokenize(data_.pre_tokenizer, s->cps, s->classes, &s->words);
  for (const auto& [begin, end] : s->words) {
    // Re-encode from code points so invalid bytes become U+FFFD's bytes.
    s->word.clear();
    for (size_t i = begin; i < end; ++i) AppendUtf8(s->cps[i], &s->word);
    EncodeWord(s->word, s, out);
  }
}

void Tokenizer::EncodeWord(std::string_view bytes, Scratch* s, std::vector<int32_t>* out) const {
  if (data_.ignore_merges) {
    s->spelled.clear();
    for (char c : bytes) s->spelled += ByteCharsUtf8()[static_cast<uint8_t>(c)];
    if (std::optional<int32_t> id = TokenId(s->spelled)) {
      out->push_back(*id);
      return;
    }
  }

  using Symbol = Scratch::Symbol;
  using Candidate = Scratch::Candidate;
  auto& symbols = s->symbols;
  auto& heap = s->heap;
  const int32_t n = static_cast<int32_t>(bytes.size());
  symbols.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = Symbol{byte_tokens_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  // Min-heap on (rank, left position): the best merge, leftmost on ties.
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  auto push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Merge* m = FindMerge(symbols[left].id, symbols[right].id);
    if (m == nullptr) return;
    heap.push_back(Candidate{m->rank, left, right, symbols[left].id, symbols[right].id, m->result});
    std::push_heap(heap.begin(), heap.end(), worse);
  };
  heap.clear();
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    // Stale if either side has merged since (a merged symbol's id changes,
    // a consumed one is -1) or they are no longer neighbours.
    if (left.id != c.left_id || right.id != c.right_id || left.next != c.right) continue;
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -1;
    push(left.prev, c.left);
    push(c.left, left.next);
  }
  bool previous_unk = false;
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].id >= 0) {
      out->push_back(symbols[i].id);
      previous_unk = false;
    } else if (data_.unk_for_unknown_bytes && !(data_.fuse_unk && previous_unk)) {
      out->push_back(data_.unk_id);
      previous_unk = true;
    }
  }
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && IsSpecial(id)) continue;
    out += TokenPiece(id);
  }
  return out;
}

}  // namespace polar
