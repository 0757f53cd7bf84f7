// Unicode helpers for the tokenizer (see unicode_text.h). Character classes
// come from ICU so they follow one Unicode version for every script; ASCII is
// served from a table because almost all text is mostly ASCII.
#include "engine/tokenizer/unicode_text.h"

#include <unicode/uchar.h>

namespace polar::tokenizer_internal {
namespace {

uint8_t ClassifyWithIcu(uint32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_WHITE_SPACE)) return kCpWhitespace;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return kCpLetter;
  if (mask & U_GC_N_MASK) return kCpNumber;
  if (mask & U_GC_P_MASK) return kCpPunctuation;
  return kCpOther;
}

struct AsciiClasses {
  std::array<uint8_t, 128> cls{};
  AsciiClasses() {
    for (uint32_t c = 0; c < 128; ++c) cls[c] = ClassifyWithIcu(c);
  }
};

// The byte-level alphabet: printable Latin-1 bytes stand for themselves, the
// other 68 (controls, space, 0x7F-0xA0, soft hyphen) are moved to U+0100.. in
// byte order so that no vocabulary entry contains whitespace or controls.
struct ByteAlphabet {
  std::array<uint32_t, 256> byte_to_char{};
  std::array<std::string, 256> utf8{};
  std::array<int16_t, 324> char_to_byte{};  // code points < 256 + 68
  ByteAlphabet() {
    char_to_byte.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      byte_to_char[b] = printable ? b : next++;
      char_to_byte[byte_to_char[b]] = static_cast<int16_t>(b);
      AppendUtf8(byte_to_char[b], &utf8[b]);
    }
  }
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

}  // namespace

void DecodeUtf8Lenient(std::string_view text, std::vector<uint32_t>* out) {
  out->clear();
  out->reserve(text.size());
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b0 = p[i];
    const int len = (b0 >= 0x80 && b0 < 0xC0) || b0 >= 0xF8 ? 0 : Utf8SequenceLength(b0);
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) ok = IsContinuation(p[i + k]);
    if (!ok) {
      out->push_back(kReplacementChar);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    switch (len) {
      case 1: cp = b0; break;
      case 2: cp = ((b0 & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu); break;
      case 3: cp = ((b0 & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu); break;
      default:
        cp = ((b0 & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
             (p[i + 3] & 0x3Fu);
        break;
    }
    if (cp > 0x10FFFF) {
      out->push_back(kReplacementChar);
      ++i;
      continue;
    }
    out->push_back(cp);
    i += len;
  }
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint8_t ClassifyCodepoint(uint32_t cp) {
  static const AsciiClasses ascii;
  if (cp < 128) return ascii.cls[cp];
  return ClassifyWithIcu(cp);
}

bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x1C && cp <= 0x1F) || ClassifyCodepoint(cp) == kCpWhitespace;
}

uint32_t ByteToChar(uint8_t byte) { return Alphabet().byte_to_char[byte]; }

int CharToByte(uint32_t cp) {
  const auto& table = Alphabet().char_to_byte;
  return cp < table.size() ? table[cp] : -1;
}

const std::array<std::string, 256>& ByteCharsUtf8() { return Alphabet().utf8; }

bool ByteLevelToBytes(std::string_view spelled, std::string* out) {
  std::vector<uint32_t> cps;
  DecodeUtf8Lenient(spelled, &cps);
  for (uint32_t cp : cps) {
    const int b = CharToByte(cp);
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace polar::tokenizer_internal
