// Properties of the pre-tokenizer and the Unicode helpers that the golden
// tests (which check exact ids) cannot show directly: every stage covers its
// input with non-empty pieces in order on random code point sequences, the
// byte alphabet is a bijection onto printable characters, and the lenient
// UTF-8 decoder agrees with ICU on valid text.
#include <random>
#include <set>
#include <string>
#include <vector>

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/unicode_text.h"
#include "gtest/gtest.h"

namespace polar {
namespace {

using namespace tokenizer_internal;  // NOLINT: the helpers under test

// Code points chosen to hit every class and every regex branch.
std::vector<uint32_t> RandomCodepoints(std::mt19937& rng, size_t n) {
  static const std::vector<uint32_t> pool = {
      'a', 'Z', 's', 't', 'e', 'r', 'l', 'S', 'R', 'E', 'L', '\'', '0', '5', '9', ' ', ' ', '\t', '\n', '\r',
      0x0B, '.', ',', '$', '+', '<', '|', '(', '_', 0xA0, 0x2009, 0x3000, 0x85, 0x4F60, 0x0661, 0x00BD, 0x2167,
      0x0301, 0x1F600, 0x200D, 0xE000, 0x0378, 0x00E9, 0x0645, 0x00, 0x1F, 0xFFFD, 0x10FFFF};
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  std::uniform_int_distribution<uint32_t> any(0, 0x10FFFF);
  std::vector<uint32_t> out(n);
  for (auto& cp : out) cp = (rng() % 8 == 0) ? any(rng) : pool[pick(rng)];
  return out;
}

TEST(PreTokenizer, StagesCoverInputInOrder) {
  const PreTokenizerStage all[] = {
      PreTokenizerStage::kIsolateDigits,          PreTokenizerStage::kGpt2,
      PreTokenizerStage::kLlama3,                 PreTokenizerStage::kQwen2,
      PreTokenizerStage::kIsolatePunctuationRuns, PreTokenizerStage::kIsolateNumberRuns,
      PreTokenizerStage::kIsolateAsciiDigitTriples};
  std::mt19937 rng(42);
  std::vector<std::pair<size_t, size_t>> pieces;
  for (int trial = 0; trial < 2000; ++trial) {
    const std::vector<uint32_t> cps = RandomCodepoints(rng, 1 + trial % 60);
    std::vector<uint8_t> cls;
    for (uint32_t cp : cps) cls.push_back(ClassifyCodepoint(cp));
    // Single stages and the chains real models use.
    std::vector<std::vector<PreTokenizerStage>> chains;
    for (PreTokenizerStage s : all) chains.push_back({s});
    chains.push_back({PreTokenizerStage::kIsolateDigits, PreTokenizerStage::kGpt2});
    chains.push_back({PreTokenizerStage::kIsolatePunctuationRuns, PreTokenizerStage::kGpt2,
                      PreTokenizerStage::kIsolateNumberRuns, PreTokenizerStage::kIsolateAsciiDigitTriples});
    for (const auto& chain : chains) {
      PreTokenize(chain, cps, cls, &pieces);
      size_t expected_begin = 0;
      for (const auto& [begin, end] : pieces) {
        ASSERT_EQ(begin, expected_begin) << PreTokenizerStageName(chain.back());
        ASSERT_LT(begin, end);
        expected_begin = end;
      }
      ASSERT_EQ(expected_begin, cps.size());
    }
  }
}

// The regex stages never put a letter and a digit in one piece, and
// kIsolateDigits leaves every number alone in its piece.
TEST(PreTokenizer, LettersAndNumbersNeverShareAPiece) {
  std::mt19937 rng(3);
  std::vector<std::pair<size_t, size_t>> pieces;
  for (int trial = 0; trial < 2000; ++trial) {
    const std::vector<uint32_t> cps = RandomCodepoints(rng, 1 + trial % 50);
    std::vector<uint8_t> cls;
    for (uint32_t cp : cps) cls.push_back(ClassifyCodepoint(cp));
    for (PreTokenizerStage stage : {PreTokenizerStage::kGpt2, PreTokenizerStage::kLlama3, PreTokenizerStage::kQwen2}) {
      const PreTokenizerStage chain[] = {stage};
      PreTokenize(chain, cps, cls, &pieces);
      for (const auto& [begin, end] : pieces) {
        bool letter = false, number = false;
        for (size_t i = begin; i < end; ++i) {
          letter |= (cls[i] & kCpLetter) != 0;
          number |= (cls[i] & kCpNumber) != 0;
        }
        EXPECT_FALSE(letter && number) << PreTokenizerStageName(stage);
      }
    }
    const PreTokenizerStage digits[] = {PreTokenizerStage::kIsolateDigits};
    PreTokenize(digits, cps, cls, &pieces);
    for (const auto& [begin, end] : pieces) {
      for (size_t i = begin; i < end; ++i) {
        if (cls[i] & kCpNumber) EXPECT_EQ(end - begin, 1u);
      }
    }
  }
}

TEST(UnicodeText, ByteAlphabetIsABijectionOntoVisibleCharacters) {
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = ByteToChar(static_cast<uint8_t>(b));
    EXPECT_TRUE(seen.insert(cp).second) << b;
    EXPECT_EQ(CharToByte(cp), b);
    EXPECT_FALSE(ClassifyCodepoint(cp) & kCpWhitespace) << b;
    EXPECT_FALSE(u_iscntrl(static_cast<UChar32>(cp))) << b;
    std::string bytes;
    ASSERT_TRUE(ByteLevelToBytes(ByteCharsUtf8()[b], &bytes));
    EXPECT_EQ(bytes, std::string(1, static_cast<char>(b)));
  }
  EXPECT_EQ(CharToByte(0x4F60), -1);
  std::string unused;
  EXPECT_FALSE(ByteLevelToBytes("\xE4\xBD\xA0", &unused));
}

TEST(UnicodeText, LenientDecoderAgreesWithIcuOnValidText) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> any(0, 0x10FFFF);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<uint32_t> want;
    std::string utf8;
    for (int i = 0; i < 30; ++i) {
      uint32_t cp = any(rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // not encodable in valid UTF-8
      want.push_back(cp);
      AppendUtf8(cp, &utf8);
    }
    // ICU's view of the same bytes.
    std::vector<UChar> utf16(utf8.size() * 2 + 2);
    int32_t len = 0;
    UErrorCode status = U_ZERO_ERROR;
    u_strFromUTF8(utf16.data(), static_cast<int32_t>(utf16.size()), &len, utf8.data(),
                  static_cast<int32_t>(utf8.size()), &status);
    ASSERT_TRUE(U_SUCCESS(status));
    std::vector<uint32_t> icu;
    for (int32_t i = 0; i < len;) {
      UChar32 c;
      U16_NEXT(utf16.data(), i, len, c);
      icu.push_back(static_cast<uint32_t>(c));
    }
    std::vector<uint32_t> got;
    DecodeUtf8Lenient(utf8, &got);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got, icu);
  }
}

TEST(UnicodeText, LenientDecoderConsumesEveryByteOfGarbage) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes(1 + trial % 32, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    std::vector<uint32_t> cps;
    DecodeUtf8Lenient(bytes, &cps);
    // Re-encoding gives at most 3 bytes per replaced byte, and every code
    // point is a valid scalar or a surrogate kept as llama.cpp keeps it.
    std::string again;
    for (uint32_t cp : cps) {
      ASSERT_LE(cp, 0x10FFFFu);
      AppendUtf8(cp, &again);
    }
    EXPECT_LE(cps.size(), bytes.size());
    EXPECT_LE(again.size(), 3 * bytes.size());
    // Decoding the re-encoding is stable.
    std::vector<uint32_t> twice;
    DecodeUtf8Lenient(again, &twice);
    EXPECT_EQ(twice, cps);
  }
}

}  // namespace
}  // namespace polar
