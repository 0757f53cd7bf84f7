// Request validation: a table of malformed GenerateRequests, each rejected
// with INVALID_ARGUMENT and a message naming the problem; well-formed ones
// pass and resolve to the documented defaults.
#include "services/gateway/request_validation.h"

#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace polar {
namespace {

using ::testing::HasSubstr;

RequestLimits TestLimits() {
  RequestLimits limits;
  limits.vocab_size = 1000;
  limits.max_context_tokens = 8;
  limits.has_chat_template = true;
  return limits;
}

v1::GenerateRequest Parse(const std::string& text) {
  v1::GenerateRequest request;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &request)) << text;
  return request;
}

struct BadCase {
  std::string name;
  v1::GenerateRequest request;
  std::string message_part;
};

std::vector<BadCase> BadCases() {
  std::vector<BadCase> cases = {
      {"no input", Parse(""), "input"},
      {"empty text", Parse("text: ''"), "text: must not be empty"},
      {"empty token list", Parse("token_ids {}"), "token_ids.ids"},
      {"token id negative", Parse("token_ids { ids: [1, -1] }"), "token_ids.ids[1]"},
      {"token id past vocab", Parse("token_ids { ids: [1000] }"), "outside [0, 1000)"},
      {"prompt too long", Parse("token_ids { ids: [1,2,3,4,5,6,7,8] }"), "at most 7"},
      {"empty chat", Parse("chat {}"), "chat.messages"},
      {"chat empty role", Parse("chat { messages { content: 'hi' } }"), "chat.messages[0].role"},
      {"max_tokens zero", Parse("text: 'hi' max_tokens: 0"), "max_tokens"},
      {"max_tokens negative", Parse("text: 'hi' max_tokens: -5"), "max_tokens"},
      {"empty stop", Parse("text: 'hi' stop: ''"), "stop[0]"},
      {"stop too long", Parse("text: 'hi' stop: '" + std::string(257, 'x') + "'"), "256 bytes"},
      {"logprobs negative", Parse("text: 'hi' logprobs: -1"), "logprobs"},
      {"logprobs too many", Parse("text: 'hi' logprobs: 21"), "logprobs"},
      {"temperature negative", Parse("text: 'hi' sampling { temperature: -0.5 }"), "temperature"},
      {"temperature nan", Parse("text: 'hi' sampling { temperature: nan }"), "temperature"},
      {"top_p zero", Parse("text: 'hi' sampling { top_p: 0 }"), "top_p"},
      {"top_p above one", Parse("text: 'hi' sampling { top_p: 1.5 }"), "top_p"},
      {"top_k negative", Parse("text: 'hi' sampling { top_k: -1 }"), "top_k"},
      {"repetition penalty zero", Parse("text: 'hi' sampling { repetition_penalty: 0 }"), "repetition_penalty"},
      {"stop token id out of range", Parse("text: 'hi' stop_token_ids: 5000"), "stop_token_ids"},
      {"fixed density zero", Parse("text: 'hi' density { mode: DENSITY_MODE_FIXED }"), "density.value"},
      {"fixed density above one", Parse("text: 'hi' density { mode: DENSITY_MODE_FIXED value: 1.5 }"),
       "density.value"},
      {"dense with value", Parse("text: 'hi' density { mode: DENSITY_MODE_DENSE value: 0.5 }"), "density.value"},
      {"empty request id", Parse("text: 'hi' request_id: ''"), "request_id"},
      {"request id with space", Parse("text: 'hi' request_id: 'a b'"), "request_id"},
      {"request id too long", Parse("text: 'hi' request_id: '" + std::string(129, 'r') + "'"), "request_id"},
  };
  // Invalid UTF-8 cannot be written in text format (string fields are checked).
  v1::GenerateRequest bad_text;
  bad_text.set_text(std::string("ab\xC3", 3));
  cases.push_back({"truncated utf8 text", bad_text, "text: is not valid UTF-8"});
  v1::GenerateRequest overlong;
  overlong.set_text(std::string("\xC0\xAF", 2));
  cases.push_back({"overlong utf8 text", overlong, "UTF-8"});
  v1::GenerateRequest surrogate;
  surrogate.set_text(std::string("\xED\xA0\x80", 3));
  cases.push_back({"surrogate in text", surrogate, "UTF-8"});
  v1::GenerateRequest bad_stop = Parse("text: 'hi'");
  bad_stop.add_stop(std::string("\xFF", 1));
  cases.push_back({"invalid utf8 stop", bad_stop, "stop[0]: is not valid UTF-8"});
  v1::GenerateRequest bad_chat = Parse("text: 'x'");
  auto* message = bad_chat.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content(std::string("\x80", 1));
  cases.push_back({"invalid utf8 chat content", bad_chat, "chat.messages[0].content"});
  v1::GenerateRequest unknown_mode = Parse("text: 'hi'");
  unknown_mode.mutable_density()->set_mode(static_cast<v1::DensityMode>(42));
  cases.push_back({"unknown density mode", unknown_mode, "density.mode"});
  v1::GenerateRequest too_many_stops = Parse("text: 'hi'");
  for (int i = 0; i < 17; ++i) too_many_stops.add_stop("s" + std::to_string(i));
  cases.push_back({"too many stops", too_many_stops, "at most 16"});
  return cases;
}

TEST(GatewayRequestValidation, MalformedRequestsAreInvalidArgumentWithMessage) {
  const std::vector<BadCase> cases = BadCases();
  ASSERT_GE(cases.size(), 20u);
  for (const BadCase& c : cases) {
    absl::Status status = ValidateGenerateRequest(c.request, TestLimits());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message_part)) << c.name;
  }
}

TEST(GatewayRequestValidation, ChatWithoutTemplateIsFailedPrecondition) {
  RequestLimits limits = TestLimits();
  limits.has_chat_template = false;
  absl::Status status =
      ValidateGenerateRequest(Parse("chat { messages { role: 'user' content: 'hi' } }"), limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("chat template"));
}

TEST(GatewayRequestValidation, WellFormedRequestsPass) {
  for (const char* text : {
           "text: 'hello'",
           "text: 'héllo ✓' max_tokens: 3 stop: 'x' stop: '\\n'",
           "token_ids { ids: [0, 999] } logprobs: 0",
           "token_ids { ids: [1,2,3,4,5,6,7] }",
           "chat { messages { role: 'user' content: '' } }",
           "text: 'a' sampling { temperature: 0 top_k: 5 top_p: 0.9 repetition_penalty: 1.1 seed: 7 }",
           "text: 'a' density { mode: DENSITY_MODE_FIXED value: 0.25 } request_id: 'my-req_1'",
           "text: 'a' density { mode: DENSITY_MODE_DENSE } logprobs: 20 stop_token_ids: 999",
       }) {
    EXPECT_TRUE(ValidateGenerateRequest(Parse(text), TestLimits()).ok()) << text;
  }
}

TEST(GatewayRequestValidation, ResolveSamplingFillsDefaults) {
  auto sampling = ResolveSampling(Parse("text: 'a'"), TestLimits(), /*default_seed=*/1234);
  ASSERT_TRUE(sampling.ok()) << sampling.status();
  EXPECT_FLOAT_EQ(sampling->temperature, 1.0f);
  EXPECT_EQ(sampling->top_k, 0);
  EXPECT_FLOAT_EQ(sampling->top_p, 1.0f);
  EXPECT_FLOAT_EQ(sampling->repetition_penalty, 1.0f);
  EXPECT_EQ(sampling->seed, 1234u);
  EXPECT_EQ(sampling->max_tokens, TestLimits().default_max_tokens);

  auto explicit_seed = ResolveSampling(Parse("text: 'a' sampling { seed: 0 temperature: 0 }"), TestLimits(), 99);
  ASSERT_TRUE(explicit_seed.ok());
  EXPECT_EQ(explicit_seed->seed, 0u);  // an explicit 0 is a seed, not "unset"
  EXPECT_TRUE(explicit_seed->greedy());
}

TEST(GatewayRequestValidation, WorkerRequestClampsMaxTokensToTheContext) {
  const v1::GenerateRequest request = Parse("token_ids { ids: [1,2,3,4,5] } max_tokens: 100 logprobs: 2");
  auto sampling = ResolveSampling(request, TestLimits(), 5);
  ASSERT_TRUE(sampling.ok());
  v1::WorkerRequest worker = MakeWorkerRequest(request, *sampling, {1, 2, 3, 4, 5}, TestLimits());
  EXPECT_EQ(worker.max_tokens(), 3);  // context 8 - prompt 5
  EXPECT_EQ(worker.prompt_token_ids_size(), 5);
  EXPECT_EQ(worker.sampling().seed(), 5u);
  EXPECT_FLOAT_EQ(worker.sampling().top_p(), 1.0f);
  EXPECT_TRUE(worker.has_logprobs());
  EXPECT_EQ(worker.logprobs(), 2);
}

TEST(GatewayRequestValidation, PromptLength) {
  EXPECT_EQ(ValidatePromptLength(0, TestLimits()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidatePromptLength(7, TestLimits()).ok());
  absl::Status status = ValidatePromptLength(8, TestLimits());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("8 tokens"));
}

TEST(GatewayRequestValidation, Utf8Validator) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80 \xE2\x9C\x93"));
  EXPECT_FALSE(IsValidUtf8(std::string("\xF4\x90\x80\x80", 4)));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8(std::string("\xE0\x80\x80", 3)));      // overlong
  EXPECT_FALSE(IsValidUtf8(std::string("\xC3", 1)));              // truncated
}

}  // namespace
}  // namespace polar
