// Chat templates rendered in C++ against transformers' apply_chat_template
// (goldens from tests/reference/make_tokenizer_goldens.py): the default
// model's own template from its GGUF, Llama-3 and plain ChatML templates
// carried by the tiny GGUFs / tokenizer_config.json, and the Llama-2 template.
#include <string>
#include <vector>

#include "engine/tokenizer/chat_template.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer/golden_util.h"

namespace polar {
namespace {

using ::polar::testing::DefaultModelPresent;
using ::polar::testing::Goldens;
using ::polar::testing::LoadGgufTokenizer;
using ::polar::testing::LoadJsonTokenizer;
using ::polar::testing::TokenizerDataPath;

std::vector<ChatMessage> Messages(const nlohmann::json& entry) {
  std::vector<ChatMessage> out;
  for (const auto& m : entry["messages"]) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

void ExpectRendered(const absl::StatusOr<std::string>& got, const nlohmann::json& entry, const std::string& label) {
  if (entry["rendered"].is_null()) {
    EXPECT_FALSE(got.ok()) << label << ": transformers raised, we rendered " << got.value_or("");
    if (!got.ok()) EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(got.ok()) << label << ": " << got.status();
  EXPECT_EQ(*got, entry["rendered"].get<std::string>()) << label;
}

int CheckAll(const std::string& name, const Tokenizer& tokenizer, const std::string& label) {
  int n = 0;
  for (const auto& entry : Goldens()["chat"]) {
    if (entry["tokenizer"] != name) continue;
    const std::vector<ChatMessage> messages = Messages(entry);
    ExpectRendered(ApplyChatTemplate(tokenizer, messages, entry["add_generation_prompt"].get<bool>()), entry,
                   label + " #" + std::to_string(n));
    ++n;
  }
  return n;
}

TEST(ChatTemplate, DefaultModelMatchesTransformers) {
  if (!DefaultModelPresent()) GTEST_SKIP() << "default model absent";
  auto tokenizer = LoadGgufTokenizer(POLAR_DEFAULT_MODEL);
  ASSERT_NE(tokenizer, nullptr);
  const ChatTemplateInfo info = DetectChatTemplate(tokenizer->chat_template());
  EXPECT_TRUE(info.recognized);
  EXPECT_EQ(info.family, ChatTemplateFamily::kChatMl);
  EXPECT_FALSE(info.default_system_prompt.empty());
  EXPECT_GE(CheckAll("smollm2", *tokenizer, "smollm2"), 8);
}

TEST(ChatTemplate, Llama3FromGgufAndTokenizerConfig) {
  auto from_gguf = LoadGgufTokenizer(TokenizerDataPath("tiny_llama3.gguf"));
  auto from_json = LoadJsonTokenizer("tiny_llama3.json", "tiny_llama3_tokenizer_config.json");
  ASSERT_NE(from_gguf, nullptr);
  ASSERT_NE(from_json, nullptr);
  EXPECT_EQ(DetectChatTemplate(from_gguf->chat_template()).family, ChatTemplateFamily::kLlama3);
  EXPECT_GE(CheckAll("tiny_llama3", *from_gguf, "llama3 gguf"), 8);
  EXPECT_GE(CheckAll("tiny_llama3", *from_json, "llama3 json"), 8);
}

TEST(ChatTemplate, PlainChatMlHasNoDefaultSystemPrompt) {
  auto tokenizer = LoadGgufTokenizer(TokenizerDataPath("tiny_qwen2.gguf"));
  ASSERT_NE(tokenizer, nullptr);
  const ChatTemplateInfo info = DetectChatTemplate(tokenizer->chat_template());
  EXPECT_TRUE(info.recognized);
  EXPECT_TRUE(info.default_system_prompt.empty());
  EXPECT_GE(CheckAll("tiny_qwen2", *tokenizer, "chatml"), 8);
}

TEST(ChatTemplate, Llama2MatchesTransformers) {
  int n = 0;
  for (const auto& entry : Goldens()["chat"]) {
    if (entry["tokenizer"] != "llama2") continue;
    const ChatTemplateInfo info = DetectChatTemplate(entry["template"].get<std::string>());
    ASSERT_TRUE(info.recognized);
    ASSERT_EQ(info.family, ChatTemplateFamily::kLlama2);
    ExpectRendered(RenderChat(info, entry["bos"].get<std::string>(), entry["eos"].get<std::string>(), Messages(entry),
                              entry["add_generation_prompt"].get<bool>()),
                   entry, "llama2 #" + std::to_string(n++));
  }
  EXPECT_GE(n, 8);
}

// An unknown (or missing) template renders plain ChatML: the same text the
// plain ChatML template gives.
TEST(ChatTemplate, UnknownTemplateFallsBackToPlainChatMl) {
  const ChatTemplateInfo unknown = DetectChatTemplate("{{ messages }} something custom");
  EXPECT_FALSE(unknown.recognized);
  EXPECT_EQ(unknown.family, ChatTemplateFamily::kChatMl);
  int n = 0;
  for (const auto& entry : Goldens()["chat"]) {
    if (entry["tokenizer"] != "tiny_qwen2") continue;
    ExpectRendered(RenderChat(unknown, "", "", Messages(entry), entry["add_generation_prompt"].get<bool>()), entry,
                   "fallback #" + std::to_string(n++));
  }
  EXPECT_GE(n, 8);
}

// Templates write the default system prompt with a literal newline (as the
// GGUF does) or with a "\n" escape inside a Jinja string: same prompt.
TEST(ChatTemplate, DefaultSystemPromptFromEscapedTemplate) {
  if (!DefaultModelPresent()) GTEST_SKIP() << "default model absent";
  auto tokenizer = LoadGgufTokenizer(POLAR_DEFAULT_MODEL);
  ASSERT_NE(tokenizer, nullptr);
  std::string escaped;
  for (char c : tokenizer->chat_template()) {
    if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  EXPECT_EQ(DetectChatTemplate(escaped).default_system_prompt,
            DetectChatTemplate(tokenizer->chat_template()).default_system_prompt);
}

TEST(ChatTemplate, EmptyConversationIsAnError) {
  const std::vector<ChatMessage> none;
  for (const char* tmpl : {"<|im_start|>", "<|start_header_id|>", "[INST] <<SYS>>", ""}) {
    auto got = RenderChat(DetectChatTemplate(tmpl), "<s>", "</s>", none, true);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << tmpl;
  }
}

}  // namespace
}  // namespace polar
