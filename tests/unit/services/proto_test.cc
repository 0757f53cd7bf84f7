// Tests for the polar.v1 messages as generated C++: requests survive
// serialization with their oneofs and proto3 `optional` fields intact
// (unset stays distinguishable from zero), bytes fields carry non-UTF-8
// vocabulary entries, the JSON form (what grpcurl shows) uses the enum names,
// the services have the documented methods and streaming shapes, and the
// enums that mirror engine types keep the engine's numbers.
#include <google/protobuf/util/json_util.h>

#include <string>

#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/tokenizer_data.h"
#include "gtest/gtest.h"
#include "polar/v1/common.pb.h"
#include "polar/v1/gateway.grpc.pb.h"
#include "polar/v1/gateway.pb.h"
#include "polar/v1/worker.grpc.pb.h"
#include "polar/v1/worker.pb.h"

namespace polar {
namespace {

template <typename Message>
Message RoundTrip(const Message& message) {
  std::string wire;
  EXPECT_TRUE(message.SerializeToString(&wire));
  Message parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire));
  return parsed;
}

TEST(ProtoTest, ChatRequestRoundTripsWithItsOneofAndOptionals) {
  v1::GenerateRequest request;
  v1::ChatMessage* system = request.mutable_chat()->add_messages();
  system->set_role("system");
  system->set_content("Be brief.");
  v1::ChatMessage* user = request.mutable_chat()->add_messages();
  user->set_role("user");
  user->set_content("Name three primary colours. ✓");
  request.mutable_sampling()->set_temperature(0.0f);  // greedy: zero, but set
  request.mutable_sampling()->set_seed(0);
  request.set_max_tokens(64);
  request.add_stop("\n\n");
  request.add_stop_token_ids(2);
  request.set_logprobs(0);  // chosen token only: zero, but set
  request.mutable_density()->set_mode(v1::DENSITY_MODE_FIXED);
  request.mutable_density()->set_value(0.5f);
  request.set_request_id("req-1");

  v1::GenerateRequest parsed = RoundTrip(request);
  EXPECT_EQ(parsed.input_case(), v1::GenerateRequest::kChat);
  EXPECT_FALSE(parsed.has_token_ids());
  ASSERT_EQ(parsed.chat().messages_size(), 2);
  EXPECT_EQ(parsed.chat().messages(1).role(), "user");
  EXPECT_EQ(parsed.chat().messages(1).content(), "Name three primary colours. ✓");

  // proto3 `optional`: a set zero is not "unset".
  ASSERT_TRUE(parsed.sampling().has_temperature());
  EXPECT_EQ(parsed.sampling().temperature(), 0.0f);
  ASSERT_TRUE(parsed.sampling().has_seed());
  EXPECT_EQ(parsed.sampling().seed(), 0u);
  ASSERT_TRUE(parsed.has_logprobs());
  EXPECT_EQ(parsed.logprobs(), 0);
  // ... and unset ones stay unset, so the gateway applies its defaults.
  EXPECT_FALSE(parsed.sampling().has_top_k());
  EXPECT_FALSE(parsed.sampling().has_top_p());
  EXPECT_FALSE(parsed.sampling().has_repetition_penalty());
  EXPECT_FALSE(parsed.has_add_special_tokens());

  ASSERT_TRUE(parsed.has_max_tokens());
  EXPECT_EQ(parsed.max_tokens(), 64);
  ASSERT_EQ(parsed.stop_size(), 1);
  EXPECT_EQ(parsed.stop(0), "\n\n");
  ASSERT_EQ(parsed.stop_token_ids_size(), 1);
  EXPECT_EQ(parsed.stop_token_ids(0), 2);
  EXPECT_EQ(parsed.density().mode(), v1::DENSITY_MODE_FIXED);
  EXPECT_EQ(parsed.density().value(), 0.5f);
  ASSERT_TRUE(parsed.has_request_id());
  EXPECT_EQ(parsed.request_id(), "req-1");
}

TEST(ProtoTest, InputOneofHoldsOneKindAtATime) {
  v1::GenerateRequest request;
  EXPECT_EQ(request.input_case(), v1::GenerateRequest::INPUT_NOT_SET);

  request.mutable_token_ids()->add_ids(1);
  request.mutable_token_ids()->add_ids(4093);
  EXPECT_EQ(request.input_case(), v1::GenerateRequest::kTokenIds);

  // Setting another member clears the previous one.
  request.set_text("Once upon a time");
  EXPECT_EQ(request.input_case(), v1::GenerateRequest::kText);
  EXPECT_FALSE(request.has_token_ids());

  v1::GenerateRequest parsed = RoundTrip(request);
  EXPECT_EQ(parsed.input_case(), v1::GenerateRequest::kText);
  EXPECT_EQ(parsed.text(), "Once upon a time");

  // An empty text is still "text was given" on the wire (the gateway rejects
  // it as empty input rather than as missing input).
  v1::GenerateRequest empty_text;
  empty_text.set_text("");
  EXPECT_EQ(RoundTrip(empty_text).input_case(), v1::GenerateRequest::kText);
}

TEST(ProtoTest, DefaultRequestMeansCalibratedDensityAndServerDefaults) {
  v1::GenerateRequest request;
  request.set_text("hi");
  v1::GenerateRequest parsed = RoundTrip(request);
  EXPECT_EQ(parsed.density().mode(), v1::DENSITY_MODE_UNSPECIFIED);
  EXPECT_EQ(parsed.density().value(), 0.0f);
  EXPECT_FALSE(parsed.has_sampling());
  EXPECT_FALSE(parsed.sampling().has_temperature());
  EXPECT_FALSE(parsed.has_max_tokens());
  EXPECT_FALSE(parsed.has_logprobs());
  EXPECT_FALSE(parsed.has_request_id());
  EXPECT_FALSE(parsed.ignore_eos());
}

TEST(ProtoTest, StreamResponseCarriesTokensLogprobsAndTheFinalFields) {
  v1::GenerateStreamResponse last;
  last.set_request_id("req-1");
  last.set_text("blue");
  v1::Token* token = last.add_tokens();
  token->set_id(4093);
  token->set_piece(std::string("\xC4\xA0", 2));  // half of a character is fine: bytes
  token->mutable_logprobs()->set_logprob(-0.25f);
  v1::TopLogprob* alt = token->mutable_logprobs()->add_top();
  alt->set_token_id(17);
  alt->set_logprob(-1.5f);
  last.set_finish_reason(v1::FINISH_REASON_STOP_SEQUENCE);
  last.set_stop_sequence("\n\n");
  last.mutable_usage()->set_prompt_tokens(12);
  last.mutable_usage()->set_completion_tokens(7);
  last.mutable_timings()->set_queue_seconds(0.001);
  last.mutable_timings()->set_time_to_first_token_seconds(0.05);
  last.mutable_timings()->set_total_seconds(0.4);
  last.set_seed(42);

  v1::GenerateStreamResponse parsed = RoundTrip(last);
  ASSERT_EQ(parsed.tokens_size(), 1);
  EXPECT_EQ(parsed.tokens(0).piece(), std::string("\xC4\xA0", 2));
  EXPECT_TRUE(parsed.tokens(0).has_logprobs());
  EXPECT_EQ(parsed.tokens(0).logprobs().logprob(), -0.25f);
  ASSERT_EQ(parsed.tokens(0).logprobs().top_size(), 1);
  EXPECT_EQ(parsed.tokens(0).logprobs().top(0).token_id(), 17);
  EXPECT_EQ(parsed.finish_reason(), v1::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(parsed.usage().prompt_tokens(), 12);
  EXPECT_EQ(parsed.usage().completion_tokens(), 7);
  EXPECT_DOUBLE_EQ(parsed.timings().time_to_first_token_seconds(), 0.05);
  EXPECT_EQ(parsed.seed(), 42u);

  // A middle message: no finish reason, no usage.
  v1::GenerateStreamResponse middle;
  middle.set_text("re");
  v1::GenerateStreamResponse parsed_middle = RoundTrip(middle);
  EXPECT_EQ(parsed_middle.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_FALSE(parsed_middle.has_usage());
  EXPECT_FALSE(parsed_middle.has_timings());
}

TEST(ProtoTest, JsonUsesEnumNamesAndReadsBack) {
  // What grpcurl and JSON clients see and send.
  v1::GenerateRequest request;
  request.set_text("hi");
  request.mutable_density()->set_mode(v1::DENSITY_MODE_DENSE);
  request.mutable_sampling()->set_temperature(0.0f);
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(request, &json).ok());
  EXPECT_NE(json.find("\"DENSITY_MODE_DENSE\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"temperature\":0"), std::string::npos) << json;  // set zero is printed

  v1::GenerateRequest parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  R"({"tokenIds": {"ids": [1, 2]}, "density": {"mode": "DENSITY_MODE_FIXED", "value": 0.25},)"
                  R"( "sampling": {"seed": "7"}, "maxTokens": 5})",
                  &parsed)
                  .ok());
  EXPECT_EQ(parsed.input_case(), v1::GenerateRequest::kTokenIds);
  EXPECT_EQ(parsed.token_ids().ids_size(), 2);
  EXPECT_EQ(parsed.density().mode(), v1::DENSITY_MODE_FIXED);
  EXPECT_EQ(parsed.density().value(), 0.25f);
  EXPECT_EQ(parsed.sampling().seed(), 7u);
  EXPECT_FALSE(parsed.sampling().has_temperature());
  EXPECT_EQ(parsed.max_tokens(), 5);
}

TEST(ProtoTest, WorkerBatchAndEventsRoundTrip) {
  v1::WorkerBatch batch;
  for (int i = 0; i < 2; ++i) {
    v1::WorkerRequest* request = batch.add_requests();
    request->set_request_id("gw1-" + std::to_string(i));
    request->add_prompt_token_ids(1);
    request->add_prompt_token_ids(100 + i);
    request->mutable_sampling()->set_temperature(0.7f);
    request->mutable_sampling()->set_top_p(1.0f);
    request->mutable_sampling()->set_repetition_penalty(1.0f);
    request->mutable_sampling()->set_seed(1234 + i);
    request->set_max_tokens(16);
    request->mutable_density()->set_mode(v1::DENSITY_MODE_CALIBRATED);
  }
  batch.mutable_requests(1)->mutable_timeout()->set_seconds(2);
  batch.mutable_requests(1)->mutable_timeout()->set_nanos(500'000'000);
  batch.mutable_requests(1)->set_logprobs(3);

  v1::WorkerBatch parsed = RoundTrip(batch);
  ASSERT_EQ(parsed.requests_size(), 2);
  EXPECT_FALSE(parsed.requests(0).has_timeout());
  EXPECT_FALSE(parsed.requests(0).has_logprobs());
  ASSERT_TRUE(parsed.requests(1).has_timeout());
  EXPECT_EQ(parsed.requests(1).timeout().seconds(), 2);
  EXPECT_EQ(parsed.requests(1).timeout().nanos(), 500'000'000);
  EXPECT_EQ(parsed.requests(1).logprobs(), 3);
  EXPECT_EQ(parsed.requests(1).sampling().seed(), 1235u);
  EXPECT_EQ(parsed.requests(1).prompt_token_ids(1), 101);

  v1::WorkerEvent event;
  event.set_step(17);
  v1::RequestUpdate* running = event.add_updates();
  running->set_request_id("gw1-0");
  running->add_token_ids(42);
  v1::RequestUpdate* failed = event.add_updates();
  failed->set_request_id("gw1-1");
  failed->set_finish_reason(v1::FINISH_REASON_ERROR);
  failed->mutable_error()->set_code(6);  // ALREADY_EXISTS
  failed->mutable_error()->set_message("request id gw1-1 is already in flight");
  failed->mutable_stats()->set_prompt_tokens(2);

  v1::WorkerEvent parsed_event = RoundTrip(event);
  EXPECT_EQ(parsed_event.step(), 17);
  ASSERT_EQ(parsed_event.updates_size(), 2);
  EXPECT_EQ(parsed_event.updates(0).token_ids(0), 42);
  EXPECT_EQ(parsed_event.updates(0).finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_FALSE(parsed_event.updates(0).has_error());
  EXPECT_EQ(parsed_event.updates(1).finish_reason(), v1::FINISH_REASON_ERROR);
  EXPECT_EQ(parsed_event.updates(1).error().code(), 6);
  EXPECT_EQ(parsed_event.updates(1).stats().prompt_tokens(), 2);
}

TEST(ProtoTest, TokenizerCarriesNonUtf8EntriesAndOptionalZeroIds) {
  v1::Tokenizer tokenizer;
  tokenizer.add_tokens("<|endoftext|>");
  tokenizer.add_tokens(std::string("\xFF\xFE", 2));  // not UTF-8: a `string` field would refuse it
  tokenizer.add_token_types(v1::TOKEN_TYPE_CONTROL);
  tokenizer.add_token_types(v1::TOKEN_TYPE_NORMAL);
  v1::Merge* merge = tokenizer.add_merges();
  merge->set_left("\xC4\xA0");
  merge->set_right("t");
  tokenizer.add_pre_tokenizer(v1::PRE_TOKENIZER_STAGE_ISOLATE_DIGITS);
  tokenizer.add_pre_tokenizer(v1::PRE_TOKENIZER_STAGE_GPT2);
  tokenizer.set_bos_id(0);  // id 0 is a real token
  tokenizer.set_eos_id(0);
  tokenizer.set_add_bos(false);
  tokenizer.set_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}");

  v1::Tokenizer parsed = RoundTrip(tokenizer);
  ASSERT_EQ(parsed.tokens_size(), 2);
  EXPECT_EQ(parsed.tokens(1), std::string("\xFF\xFE", 2));
  EXPECT_EQ(parsed.token_types(0), v1::TOKEN_TYPE_CONTROL);
  ASSERT_EQ(parsed.merges_size(), 1);
  EXPECT_EQ(parsed.merges(0).left(), "\xC4\xA0");
  ASSERT_EQ(parsed.pre_tokenizer_size(), 2);
  EXPECT_EQ(parsed.pre_tokenizer(1), v1::PRE_TOKENIZER_STAGE_GPT2);
  ASSERT_TRUE(parsed.has_bos_id());
  EXPECT_EQ(parsed.bos_id(), 0);
  EXPECT_TRUE(parsed.has_eos_id());
  EXPECT_FALSE(parsed.has_unk_id());  // unset = the tokenizer has none
  EXPECT_FALSE(parsed.has_eot_id());
  EXPECT_EQ(parsed.chat_template(), tokenizer.chat_template());
}

TEST(ProtoTest, TokenTypeKeepsTheEngineNumbers) {
  // The gateway converts by number; these must never drift apart.
  EXPECT_EQ(v1::TOKEN_TYPE_UNDEFINED, static_cast<int>(TokenType::kUndefined));
  EXPECT_EQ(v1::TOKEN_TYPE_NORMAL, static_cast<int>(TokenType::kNormal));
  EXPECT_EQ(v1::TOKEN_TYPE_UNKNOWN, static_cast<int>(TokenType::kUnknown));
  EXPECT_EQ(v1::TOKEN_TYPE_CONTROL, static_cast<int>(TokenType::kControl));
  EXPECT_EQ(v1::TOKEN_TYPE_USER_DEFINED, static_cast<int>(TokenType::kUserDefined));
  EXPECT_EQ(v1::TOKEN_TYPE_UNUSED, static_cast<int>(TokenType::kUnused));
  EXPECT_EQ(v1::TOKEN_TYPE_BYTE, static_cast<int>(TokenType::kByte));
  EXPECT_EQ(v1::TokenType_descriptor()->value_count(), 7);
}

TEST(ProtoTest, PreTokenizerStageIsTheEngineNumberPlusOne) {
  struct Pair {
    PreTokenizerStage engine;
    v1::PreTokenizerStage proto;
  };
  const Pair pairs[] = {
      {PreTokenizerStage::kIsolateDigits, v1::PRE_TOKENIZER_STAGE_ISOLATE_DIGITS},
      {PreTokenizerStage::kGpt2, v1::PRE_TOKENIZER_STAGE_GPT2},
      {PreTokenizerStage::kLlama3, v1::PRE_TOKENIZER_STAGE_LLAMA3},
      {PreTokenizerStage::kQwen2, v1::PRE_TOKENIZER_STAGE_QWEN2},
      {PreTokenizerStage::kIsolatePunctuationRuns, v1::PRE_TOKENIZER_STAGE_ISOLATE_PUNCTUATION_RUNS},
      {PreTokenizerStage::kIsolateNumberRuns, v1::PRE_TOKENIZER_STAGE_ISOLATE_NUMBER_RUNS},
      {PreTokenizerStage::kIsolateAsciiDigitTriples, v1::PRE_TOKENIZER_STAGE_ISOLATE_ASCII_DIGIT_TRIPLES},
  };
  for (const Pair& pair : pairs) {
    SCOPED_TRACE(std::string(PreTokenizerStageName(pair.engine)));
    EXPECT_EQ(static_cast<int>(pair.proto), static_cast<int>(pair.engine) + 1);
  }
  // Every stage but UNSPECIFIED is listed above: a new engine stage needs a proto value.
  EXPECT_EQ(v1::PreTokenizerStage_descriptor()->value_count(), static_cast<int>(std::size(pairs)) + 1);
}

TEST(ProtoTest, ServicesHaveTheDocumentedMethods) {
  // The stubs exist (compile-time) and the descriptors say what they do.
  static_assert(sizeof(v1::Gateway::Stub) > 0 && sizeof(v1::Worker::Stub) > 0);
  const google::protobuf::ServiceDescriptor* gateway = 
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("polar.v1.Gateway");
  ASSERT_NE(gateway, nullptr);
  EXPECT_EQ(gateway->full_name(), "polar.v1.Gateway");
  EXPECT_EQ(gateway->method_count(), 4);
  const auto* generate = gateway->FindMethodByName("Generate");
  ASSERT_NE(generate, nullptr);
  EXPECT_FALSE(generate->server_streaming());
  const auto* stream = gateway->FindMethodByName("GenerateStream");
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->server_streaming());
  EXPECT_FALSE(stream->client_streaming());
  EXPECT_NE(gateway->FindMethodByName("Tokenize"), nullptr);
  EXPECT_NE(gateway->FindMethodByName("GetModelInfo"), nullptr);

  const google::protobuf::ServiceDescriptor* worker = 
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("polar.v1.Worker");
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(worker->full_name(), "polar.v1.Worker");
  const auto* worker_generate = worker->FindMethodByName("Generate");
  ASSERT_NE(worker_generate, nullptr);
  EXPECT_TRUE(worker_generate->server_streaming());
  EXPECT_EQ(worker_generate->input_type()->full_name(), "polar.v1.WorkerBatch");
  EXPECT_EQ(worker_generate->output_type()->full_name(), "polar.v1.WorkerEvent");
  ASSERT_NE(worker->FindMethodByName("WatchLoad"), nullptr);
  EXPECT_TRUE(worker->FindMethodByName("WatchLoad")->server_streaming());
  for (const char* name : {"Cancel", "GetLoad", "GetModelInfo", "GetTokenizer"}) {
    SCOPED_TRACE(name);
    ASSERT_NE(worker->FindMethodByName(name), nullptr);
    EXPECT_FALSE(worker->FindMethodByName(name)->server_streaming());
  }
}

}  // namespace
}  // namespace polar
