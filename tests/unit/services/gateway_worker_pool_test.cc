// WorkerPool's pure parts: --workers parsing, the tokenizer proto -> engine
// TokenizerData conversion (checked by tokenizing with the result), DNS
// resolution of a name, and picking among no ready workers.
#include "services/gateway/worker_pool.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace polar {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(GatewayWorkerTargets, StaticList) {
  auto targets = ParseWorkerTargets("127.0.0.1:5001, worker-1:5002,[::1]:7");
  ASSERT_TRUE(targets.ok()) << targets.status();
  EXPECT_THAT(targets->static_addresses, ElementsAre("127.0.0.1:5001", "worker-1:5002", "[::1]:7"));
  EXPECT_TRUE(targets->dns_host.empty());
}

TEST(GatewayWorkerTargets, Dns) {
  auto targets = ParseWorkerTargets("dns:///polar-worker.default.svc:50052");
  ASSERT_TRUE(targets.ok()) << targets.status();
  EXPECT_EQ(targets->dns_host, "polar-worker.default.svc");
  EXPECT_EQ(targets->dns_port, "50052");
  EXPECT_TRUE(targets->static_addresses.empty());
}

TEST(GatewayWorkerTargets, Malformed) {
  for (const char* spec : {"", "host", "host:", "host:0x", "host:70000", "dns:///name", "dns:///:80", "a:1,b"}) {
    auto targets = ParseWorkerTargets(spec);
    EXPECT_EQ(targets.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_THAT(std::string(targets.status().message()), HasSubstr("--workers")) << spec;
  }
}

// A tiny byte-level vocabulary: "a", "b", "ab" (one merge) and an EOS.
v1::Tokenizer TinyTokenizer() {
  v1::Tokenizer proto;
  proto.set_source("tiny");
  for (const char* token : {"a", "b", "ab"}) {
    proto.add_tokens(token);
    proto.add_token_types(v1::TOKEN_TYPE_NORMAL);
  }
  proto.add_tokens("<|endoftext|>");
  proto.add_token_types(v1::TOKEN_TYPE_CONTROL);
  v1::Merge* merge = proto.add_merges();
  merge->set_left("a");
  merge->set_right("b");
  proto.add_pre_tokenizer(v1::PRE_TOKENIZER_STAGE_GPT2);
  proto.set_eos_id(3);
  return proto;
}

TEST(GatewayTokenizerProto, ConvertsFieldForFieldAndTokenizes) {
  auto data = TokenizerDataFromProto(TinyTokenizer());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->tokens.size(), 4u);
  EXPECT_EQ(data->types[3], TokenType::kControl);
  ASSERT_EQ(data->pre_tokenizer.size(), 1u);
  EXPECT_EQ(data->pre_tokenizer[0], PreTokenizerStage::kGpt2);  // proto numbers are the engine's plus one
  EXPECT_EQ(data->eos_id, 3);
  EXPECT_EQ(data->bos_id, -1);  // unset optional -> none
  auto tokenizer = Tokenizer::FromData(*std::move(data));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Encode("abba", false, false), ElementsAre(2, 1, 0));
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(3));
}

TEST(GatewayTokenizerProto, RejectsMismatchedTypesAndUnsetStages) {
  v1::Tokenizer proto = TinyTokenizer();
  proto.add_token_types(v1::TOKEN_TYPE_NORMAL);
  EXPECT_EQ(TokenizerDataFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
  proto = TinyTokenizer();
  proto.add_pre_tokenizer(v1::PRE_TOKENIZER_STAGE_UNSPECIFIED);
  EXPECT_EQ(TokenizerDataFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GatewayWorkerPool, ResolvesDnsNamesAndPicksNothingUnready) {
  auto targets = ParseWorkerTargets("dns:///localhost:1");
  ASSERT_TRUE(targets.ok());
  WorkerPool pool(*targets, absl::Milliseconds(50));
  pool.Start();  // port 1: nothing listens, so no worker becomes ready
  EXPECT_GE(pool.num_workers(), 1);  // 127.0.0.1:1 and/or [::1]:1
  EXPECT_EQ(pool.num_ready(), 0);
  EXPECT_EQ(pool.Pick({}), nullptr);
  EXPECT_EQ(pool.model(), nullptr);
  pool.Stop();
}

}  // namespace
}  // namespace polar
