// Streaming detokenizer (see incremental_detokenizer.h). The UTF-8 check is
// the strict one of Unicode Table 3-7 (no overlongs, surrogates or values
// above U+10FFFF), so what reaches clients is always valid UTF-8 even though
// the tokenizer itself accepts anything.
#include "engine/tokenizer/incremental_detokenizer.h"

namespace polar {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Sequence length for a lead byte and the allowed range of the byte after
// it; length 0 marks a byte that cannot start a character.
struct LeadInfo {
  int length;
  uint8_t second_lo, second_hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

}  // namespace

size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const LeadInfo lead = Lead(p[i]);
    if (lead.length == 0) {
      out->append(kReplacement);
      ++i;
      continue;
    }
    // Count the bytes that still fit the sequence.
    int good = 1;
    while (good < lead.length && i + good < n) {
      const uint8_t b = p[i + good];
      const bool ok = good == 1 ? (b >= lead.second_lo && b <= lead.second_hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) break;
      ++good;
    }
    if (good == lead.length) {
      out->append(bytes.substr(i, good));
      i += good;
    } else if (i + good == n && !final) {
      break;  // a valid prefix cut by the end of input: wait for more bytes
    } else {
      out->append(kReplacement);  // the maximal subpart that was valid so far
      i += good;
    }
  }
  return i;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::Push(int32_t id) {
  if (skip_special_ && tokenizer_.IsSpecial(id)) return {};
  pending_ += tokenizer_.TokenPiece(id);
  std::string out;
  const size_t used = AppendValidUtf8(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  AppendValidUtf8(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace polar
