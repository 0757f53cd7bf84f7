// Encode/Decode against reference tokenizers: every GGUF must give llama.cpp's
// ids and every tokenizer.json Hugging Face tokenizers' ids, on ~200 texts
// (prose, code, numbers, many scripts, emoji, whitespace runs, special-token
// markup, invalid UTF-8, seeded random strings) with add_special and
// parse_special on and off. Goldens: tests/reference/make_tokenizer_goldens.py.
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer/golden_util.h"

namespace polar {
namespace {

using ::polar::testing::DefaultModelPresent;
using ::polar::testing::GoldenGgufPath;
using ::polar::testing::Goldens;
using ::polar::testing::GoldenText;
using ::polar::testing::HexDecode;
using ::polar::testing::LoadGgufTokenizer;
using ::polar::testing::LoadJsonTokenizer;

struct Param {
  std::string tokenizer;  // key in goldens.json "tokenizers"
  bool gguf;              // FromGguf (llama.cpp reference) or FromTokenizerJson (HF)
};

void PrintTo(const Param& p, std::ostream* os) { *os << p.tokenizer << (p.gguf ? " (gguf)" : " (json)"); }

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return info.param.tokenizer + (info.param.gguf ? "_gguf" : "_json");
}

class TokenizerGoldenTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    entry_ = &Goldens()["tokenizers"][GetParam().tokenizer];
    if (GetParam().gguf) {
      const std::string path = GoldenGgufPath(*entry_);
      if (path == POLAR_DEFAULT_MODEL && !DefaultModelPresent()) GTEST_SKIP() << "default model absent: " << path;
      tokenizer_ = LoadGgufTokenizer(path);
    } else {
      tokenizer_ = LoadJsonTokenizer((*entry_)["json"].get<std::string>());
    }
    ASSERT_NE(tokenizer_, nullptr);
  }
  const char* Reference() const { return GetParam().gguf ? "llama_cpp" : "hf"; }

  const nlohmann::json* entry_ = nullptr;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(TokenizerGoldenTest, EncodeMatchesReference) {
  int checked = 0;
  for (const auto& c : (*entry_)["cases"]) {
    if (!c.contains(Reference())) continue;
    const size_t index = c["text"].get<size_t>();
    const std::string text = GoldenText(index);
    const bool add_special = c["add_special"].get<bool>();
    const bool parse_special = c["parse_special"].get<bool>();
    const auto expected = c[Reference()].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->Encode(text, add_special, parse_special), expected)
        << "text " << Goldens()["texts"][index]["name"] << " add_special=" << add_special
        << " parse_special=" << parse_special;
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

TEST_P(TokenizerGoldenTest, VocabularyFacts) {
  EXPECT_EQ(tokenizer_->vocab_size(), (*entry_)["vocab_size"].get<int32_t>());
  if (GetParam().gguf) {
    // The JSON files carry no bos/eos (tokenizer_config.json does); llama.cpp's
    // view applies to the GGUF.
    EXPECT_EQ(tokenizer_->bos_id(), (*entry_)["bos"].get<int32_t>());
    EXPECT_EQ(tokenizer_->eos_id(), (*entry_)["eos"].get<int32_t>());
  }
  // End-of-generation tokens: by name (and eos), as llama.cpp finds them.
  const auto eog = (*entry_)["eog"].get<std::vector<int32_t>>();
  if (GetParam().gguf) {
    EXPECT_EQ(tokenizer_->eos_ids(), eog);
  } else {
    for (int32_t id : eog) EXPECT_TRUE(tokenizer_->IsEndOfGeneration(id)) << id;
  }
  for (int32_t id : eog) EXPECT_TRUE(tokenizer_->IsSpecial(id)) << id;
}

TEST_P(TokenizerGoldenTest, DecodeInvertsEncode) {
  const TokenizerData& data = tokenizer_->data();
  for (size_t i = 0; i < Goldens()["texts"].size(); ++i) {
    const std::string text = GoldenText(i);
    // Invalid bytes are tokenized as U+FFFD (llama.cpp), so the round trip
    // gives the text with those replacements.
    std::vector<uint32_t> cps;
    tokenizer_internal::DecodeUtf8Lenient(text, &cps);
    std::string replaced, expected;
    for (uint32_t cp : cps) tokenizer_internal::AppendUtf8(cp, &replaced);
    // Bytes the vocabulary has no symbol for are dropped.
    for (char b : replaced) {
      if (tokenizer_->TokenId(tokenizer_internal::ByteCharsUtf8()[static_cast<uint8_t>(b)])) expected += b;
    }
    if (data.add_prefix_space && !expected.empty() && expected[0] != ' ') continue;  // adds a space by design
    if (data.normalize_nfc) continue;                                                  // may compose characters
    for (bool parse_special : {false, true}) {
      const std::vector<int32_t> ids = tokenizer_->Encode(text, /*add_special=*/false, parse_special);
      EXPECT_EQ(tokenizer_->Decode(ids), expected) << Goldens()["texts"][i]["name"];
    }
  }
}

TEST_P(TokenizerGoldenTest, DecodeSkipsSpecialTokensOnRequest) {
  const std::string text = "<|im_start|>user\nHi<|im_end|><|endoftext|>";
  const std::vector<int32_t> ids = tokenizer_->Encode(text, /*add_special=*/true, /*parse_special=*/true);
  std::string without;
  for (int32_t id : ids) {
    if (!tokenizer_->IsSpecial(id)) without += tokenizer_->TokenPiece(id);
  }
  EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special=*/true), without);
  EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special=*/false).find("user\nHi") != std::string::npos, true);
  EXPECT_LT(tokenizer_->Decode(ids, true).size(), tokenizer_->Decode(ids, false).size());
}

TEST_P(TokenizerGoldenTest, ParseSpecialControlsMarkupRecognition) {
  const std::optional<int32_t> im_end = tokenizer_->TokenId("<|im_end|>");
  ASSERT_TRUE(im_end.has_value());
  ASSERT_TRUE(tokenizer_->IsSpecial(*im_end));
  const std::vector<int32_t> parsed = tokenizer_->Encode("a<|im_end|>b", false, /*parse_special=*/true);
  const std::vector<int32_t> literal = tokenizer_->Encode("a<|im_end|>b", false, /*parse_special=*/false);
  EXPECT_THAT(parsed, ::testing::Contains(*im_end));
  EXPECT_THAT(literal, ::testing::Not(::testing::Contains(*im_end)));
  EXPECT_GT(literal.size(), parsed.size());
  // Same text either way (ByteLevel add_prefix_space prefixes each fragment
  // between special tokens, so there the texts differ by design).
  if (!tokenizer_->data().add_prefix_space) EXPECT_EQ(tokenizer_->Decode(parsed), tokenizer_->Decode(literal));
}

TEST_P(TokenizerGoldenTest, OutOfRangeIdsDecodeToNothing) {
  const int32_t n = tokenizer_->vocab_size();
  const std::vector<int32_t> ids = {-5, n, n + 100, INT32_MAX, INT32_MIN};
  EXPECT_EQ(tokenizer_->Decode(ids), "");
  EXPECT_EQ(tokenizer_->TokenText(n), "");
  EXPECT_FALSE(tokenizer_->IsEndOfGeneration(-1));
  EXPECT_FALSE(tokenizer_->IsSpecial(n));
}

TEST_P(TokenizerGoldenTest, TokenIdInvertsTokenText) {
  for (int32_t id = 0; id < tokenizer_->vocab_size(); id += 7) {
    const std::optional<int32_t> back = tokenizer_->TokenId(tokenizer_->TokenText(id));
    ASSERT_TRUE(back.has_value()) << id;
    EXPECT_EQ(tokenizer_->TokenText(*back), tokenizer_->TokenText(id));
  }
  EXPECT_FALSE(tokenizer_->TokenId("definitely not a token \x01\x02").has_value());
}

INSTANTIATE_TEST_SUITE_P(All, TokenizerGoldenTest,
                         ::testing::Values(Param{"smollm2", true}, Param{"smollm2", false},
                                           Param{"tiny_llama3", true}, Param{"tiny_llama3", false},
                                           Param{"tiny_qwen2", true}, Param{"tiny_qwen2", false},
                                           Param{"tiny_gpt2", true}, Param{"tiny_gpt2", false}),
                         ParamName);

// Token pieces of the default model against llama.cpp's token_to_piece.
TEST(TokenizerPieces, DefaultModelMatchesLlamaCpp) {
  if (!DefaultModelPresent()) GTEST_SKIP() << "default model absent";
  auto tokenizer = LoadGgufTokenizer(POLAR_DEFAULT_MODEL);
  ASSERT_NE(tokenizer, nullptr);
  const auto& pieces = Goldens()["tokenizers"]["smollm2"]["pieces"];
  ASSERT_GT(pieces.size(), 500u);
  for (auto it = pieces.begin(); it != pieces.end(); ++it) {
    const int32_t id = std::stoi(it.key());
    EXPECT_EQ(tokenizer->TokenPiece(id), HexDecode(it.value().get<std::string>())) << "token " << id;
    EXPECT_EQ(tokenizer->Decode(std::vector<int32_t>{id}), HexDecode(it.value().get<std::string>()));
  }
}

// The GGUF and the tokenizer.json of the default model are one vocabulary.
TEST(TokenizerSources, DefaultModelGgufAndJsonAgree) {
  if (!DefaultModelPresent()) GTEST_SKIP() << "default model absent";
  auto from_gguf = LoadGgufTokenizer(POLAR_DEFAULT_MODEL);
  auto from_json = LoadJsonTokenizer("smollm2_tokenizer.json");
  ASSERT_NE(from_gguf, nullptr);
  ASSERT_NE(from_json, nullptr);
  ASSERT_EQ(from_gguf->vocab_size(), from_json->vocab_size());
  for (int32_t id = 0; id < from_gguf->vocab_size(); ++id) {
    ASSERT_EQ(from_gguf->TokenText(id), from_json->TokenText(id)) << id;
    ASSERT_EQ(from_gguf->TokenPiece(id), from_json->TokenPiece(id)) << id;
  }
  EXPECT_EQ(from_gguf->data().merges, from_json->data().merges);
  EXPECT_EQ(from_gguf->data().pre_tokenizer, from_json->data().pre_tokenizer);
}

// tokenizer_config.json supplies bos/eos and the chat template.
TEST(TokenizerSources, TokenizerConfigAddsSpecialIdsAndTemplate) {
  auto plain = LoadJsonTokenizer("tiny_llama3.json");
  auto configured = LoadJsonTokenizer("tiny_llama3.json", "tiny_llama3_tokenizer_config.json");
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(configured, nullptr);
  const auto& entry = Goldens()["tokenizers"]["tiny_llama3"];
  // The post-processor already names BOS; the config adds EOS and the template.
  EXPECT_EQ(plain->bos_id(), entry["bos"].get<int32_t>());
  EXPECT_TRUE(plain->add_bos());
  EXPECT_EQ(plain->eos_id(), -1);
  EXPECT_EQ(configured->eos_id(), entry["eos"].get<int32_t>());
  EXPECT_TRUE(plain->chat_template().empty());
  EXPECT_NE(configured->chat_template().find("<|start_header_id|>"), std::string::npos);
}

}  // namespace
}  // namespace polar
