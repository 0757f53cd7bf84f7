// Streaming detokenization: every chunk is valid UTF-8 (checked with ICU, an
// independent decoder), nothing is lost or duplicated (the chunks concatenate
// to the one-shot decode with invalid bytes replaced), and characters split
// across tokens are held back until complete. The replacement rule itself is
// checked against Python's bytes.decode(errors="replace").
#include <random>
#include <string>
#include <vector>

#include <unicode/ustring.h>

#include "engine/tokenizer/incremental_detokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer/golden_util.h"

namespace polar {
namespace {

using ::polar::testing::DefaultModelPresent;
using ::polar::testing::Goldens;
using ::polar::testing::GoldenText;
using ::polar::testing::HexDecode;
using ::polar::testing::LoadGgufTokenizer;
using ::polar::testing::TokenizerDataPath;

bool IsValidUtf8(const std::string& s) {
  if (s.empty()) return true;
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8(nullptr, 0, &length, s.data(), static_cast<int32_t>(s.size()), &status);
  return status == U_BUFFER_OVERFLOW_ERROR || U_SUCCESS(status);
}

std::string Replaced(const std::string& bytes) {
  std::string out;
  AppendValidUtf8(bytes, /*final=*/true, &out);
  return out;
}

// Streams `ids`; returns the concatenated output and checks every chunk.
std::string Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special) {
  IncrementalDetokenizer detok(tokenizer, skip_special);
  std::string all;
  for (int32_t id : ids) {
    const std::string chunk = detok.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk)) << "token " << id;
    EXPECT_LE(detok.pending_bytes(), 3u);
    all += chunk;
  }
  const std::string tail = detok.Flush();
  EXPECT_TRUE(IsValidUtf8(tail));
  EXPECT_EQ(detok.pending_bytes(), 0u);
  return all + tail;
}

TEST(AppendValidUtf8, MatchesPythonReplace) {
  const auto& cases = Goldens()["utf8_replace"];
  ASSERT_GT(cases.size(), 300u);
  for (const auto& c : cases) {
    const std::string in = HexDecode(c["in"].get<std::string>());
    EXPECT_EQ(Replaced(in), HexDecode(c["out"].get<std::string>())) << c["in"];
  }
}

TEST(AppendValidUtf8, HoldsBackOnlyValidPrefixes) {
  // Every prefix of a valid multi-byte character is held back when not
  // final; completing it releases the character.
  for (const std::string ch : {"\xC3\xA9", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF"}) {
    for (size_t cut = 1; cut < ch.size(); ++cut) {
      std::string out;
      EXPECT_EQ(AppendValidUtf8(ch.substr(0, cut), /*final=*/false, &out), 0u);
      EXPECT_EQ(out, "");
      EXPECT_EQ(AppendValidUtf8(ch, /*final=*/false, &out), ch.size());
      EXPECT_EQ(out, ch);
    }
  }
}

class StreamingTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string path = GetParam() == "default" ? std::string(POLAR_DEFAULT_MODEL) : TokenizerDataPath(GetParam());
    if (GetParam() == "default" && !DefaultModelPresent()) GTEST_SKIP() << "default model absent";
    tokenizer_ = LoadGgufTokenizer(path);
    ASSERT_NE(tokenizer_, nullptr);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(StreamingTest, GoldenTextsStreamLikeOneShotDecode) {
  for (size_t i = 0; i < Goldens()["texts"].size(); ++i) {
    const std::vector<int32_t> ids = tokenizer_->Encode(GoldenText(i), /*add_special=*/true, /*parse_special=*/true);
    for (bool skip : {true, false}) {
      EXPECT_EQ(Stream(*tokenizer_, ids, skip), Replaced(tokenizer_->Decode(ids, skip)))
          << Goldens()["texts"][i]["name"] << " skip_special=" << skip;
    }
  }
}

TEST_P(StreamingTest, RandomTokenSequences) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any_id(0, tokenizer_->vocab_size() - 1);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<int32_t> ids(1 + trial % 40);
    for (auto& id : ids) id = any_id(rng);
    EXPECT_EQ(Stream(*tokenizer_, ids, true), Replaced(tokenizer_->Decode(ids, true)));
  }
}

TEST_P(StreamingTest, EmojiSplitAcrossTokensIsHeldBack) {
  // Byte-level vocabularies spell rare characters with several tokens
  // (crab, DNA and dodo emoji are in none of the test vocabularies).
  for (const std::string text : {"\xF0\x9F\xA6\x80", "\xF0\x9F\xA7\xAC", "\xF0\x9F\xA6\xA4",
                                 "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", "a\xE4\xB8\x96"}) {
    const std::vector<int32_t> ids = tokenizer_->Encode(text, false, false);
    IncrementalDetokenizer detok(*tokenizer_);
    std::string got;
    int split_tokens = 0;
    for (int32_t id : ids) {
      const std::string chunk = detok.Push(id);
      ASSERT_TRUE(IsValidUtf8(chunk));
      if (detok.pending_bytes() > 0) ++split_tokens;
      got += chunk;
    }
    EXPECT_EQ(detok.pending_bytes(), 0u);
    EXPECT_EQ(got + detok.Flush(), text);
    if (text.size() == 4 && text[0] == '\xF0') EXPECT_GT(split_tokens, 0) << "emoji was not split";
  }
}

TEST_P(StreamingTest, FlushReplacesATruncatedCharacter) {
  // The first tokens of an emoji, then end of stream.
  const std::vector<int32_t> ids = tokenizer_->Encode("\xF0\x9F\xA6\x80", false, false);
  if (ids.size() < 2) GTEST_SKIP() << "emoji is a single token here";
  IncrementalDetokenizer detok(*tokenizer_);
  std::string got = detok.Push(ids[0]);
  EXPECT_EQ(got, "");
  got += detok.Flush();
  EXPECT_EQ(got, Replaced(std::string(tokenizer_->TokenPiece(ids[0]))));
  EXPECT_TRUE(IsValidUtf8(got));
}

INSTANTIATE_TEST_SUITE_P(All, StreamingTest,
                         ::testing::Values("default", "tiny_llama3.gguf", "tiny_qwen2.gguf", "tiny_gpt2.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '.') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace polar
