// Unicode helpers for the byte-level BPE tokenizer: a UTF-8 decoder that never
// fails (it matches llama.cpp's, so Polar tokenizes invalid input exactly like
// llama.cpp does), the code-point classes the pre-tokenizer regexes ask for
// (\p{L}, \p{N}, \s) taken from ICU, and GPT-2's byte <-> printable-character
// table that lets every byte sequence be spelled with vocabulary characters.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace polar::tokenizer_internal {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes `text` into code points the way llama.cpp's unicode_cpts_from_utf8
// does: a lead byte followed by the right number of continuation bytes is
// accepted even when overlong or a surrogate (their value is kept); any other
// byte becomes one U+FFFD and decoding resumes at the next byte. Values above
// U+10FFFF (F4 90.. to F7 ..), on which llama.cpp aborts, also become U+FFFD
// for their lead byte.
void DecodeUtf8Lenient(std::string_view text, std::vector<uint32_t>* out);

// Appends the UTF-8 encoding of `cp` (cp <= 0x10FFFF; surrogates are encoded
// as three bytes, like llama.cpp, so DecodeUtf8Lenient round-trips them).
void AppendUtf8(uint32_t cp, std::string* out);

// Length of the UTF-8 sequence a byte starts, judged from its high bits only
// (1 for continuation and invalid bytes).
inline int Utf8SequenceLength(uint8_t lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

// What the pre-tokenizer regexes distinguish. A code point is at most one of
// letter (\p{L}) and number (\p{N}); whitespace (\s, the Unicode White_Space
// property) is never a letter or number.
enum CodepointClass : uint8_t {
  kCpOther = 0,
  kCpLetter = 1 << 0,
  kCpNumber = 1 << 1,
  kCpWhitespace = 1 << 2,
  kCpPunctuation = 1 << 3,  // \p{P}
};
uint8_t ClassifyCodepoint(uint32_t cp);

// True for the characters Python's str.isspace() accepts (White_Space plus the
// ASCII separators 0x1C-0x1F); chat templates strip content with it.
bool IsPythonSpace(uint32_t cp);

// GPT-2's byte-level alphabet: byte b is written as the UTF-8 of one printable
// code point, ByteToChar(b).
uint32_t ByteToChar(uint8_t byte);
// The byte a code point stands for, or -1 if it is not in the alphabet.
int CharToByte(uint32_t cp);
// UTF-8 spelling of ByteToChar(b) for every byte, precomputed.
const std::array<std::string, 256>& ByteCharsUtf8();

// Decodes a byte-level spelling (a vocabulary entry) back to raw bytes.
// Returns false, leaving `out` partially written, if some character is not in
// the byte-level alphabet.
bool ByteLevelToBytes(std::string_view spelled, std::string* out);

}  // namespace polar::tokenizer_internal
