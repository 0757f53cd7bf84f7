// MetricsHttpServer on an ephemeral loopback port, fetched with a real HTTP
// client: /metrics body and content type, the index, 404, a taken port, and
// start/stop/restart.
#include "services/common/metrics_http_server.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

using ::testing::HasSubstr;

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<CounterFamily*> tokens =
        registry_.AddCounter({.name = "polar_generation_tokens_total", .help = "Tokens generated."});
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = &(*tokens)->Get();
  }

  MetricsRegistry registry_;
  Counter* tokens_ = nullptr;
};

TEST_F(MetricsHttpServerTest, ServesMetricsOnAnEphemeralPort) {
  MetricsHttpServer server(&registry_);
  EXPECT_EQ(server.port(), 0);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  ASSERT_GT(server.port(), 0);

  httplib::Client client("127.0.0.1", server.port());
  tokens_->Increment(41);
  httplib::Result first = client.Get("/metrics");
  ASSERT_TRUE(first) << httplib::to_string(first.error());
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(first->body, registry_.RenderText());
  EXPECT_THAT(first->body, HasSubstr("\npolar_generation_tokens_total 41\n"));

  // Every scrape renders afresh.
  tokens_->Increment();
  httplib::Result second = client.Get("/metrics");
  ASSERT_TRUE(second);
  EXPECT_THAT(second->body, HasSubstr("\npolar_generation_tokens_total 42\n"));
}

TEST_F(MetricsHttpServerTest, IndexAndNotFound) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  httplib::Client client("127.0.0.1", server.port());
  httplib::Result index = client.Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_THAT(index->body, HasSubstr("/metrics"));
  httplib::Result missing = client.Get("/nothing-here");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(missing->body, HasSubstr("/nothing-here"));
}

TEST_F(MetricsHttpServerTest, PortInUseIsAClearError) {
  MetricsHttpServer first(&registry_);
  ASSERT_TRUE(first.Start("127.0.0.1", 0).ok());
  MetricsHttpServer second(&registry_);
  absl::Status status = second.Start("127.0.0.1", first.port());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat("127.0.0.1:", first.port())));
  EXPECT_THAT(std::string(status.message()), HasSubstr("in use"));
  EXPECT_EQ(second.port(), 0);
  // The first keeps serving.
  httplib::Client client("127.0.0.1", first.port());
  httplib::Result result = client.Get("/metrics");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
}

TEST_F(MetricsHttpServerTest, BadArguments) {
  MetricsHttpServer server(&registry_);
  EXPECT_EQ(server.Start("127.0.0.1", 70000).code(), absl::StatusCode::kInvalidArgument);
  // Not an address of this machine.
  EXPECT_EQ(server.Start("192.0.2.1", 0).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  EXPECT_EQ(server.Start("127.0.0.1", 0).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MetricsHttpServerTest, StopThenRestartOnTheSamePort) {
  MetricsHttpServer server(&registry_);
  server.Stop();  // before Start: nothing to do
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  int port = server.port();
  {
    httplib::Client client("127.0.0.1", port);
    ASSERT_TRUE(client.Get("/metrics"));
  }
  server.Stop();
  server.Stop();
  EXPECT_EQ(server.port(), 0);
  {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(2);
    EXPECT_FALSE(client.Get("/metrics"));
  }
  // A restarted service gets its port back at once.
  ASSERT_TRUE(server.Start("127.0.0.1", port).ok());
  EXPECT_EQ(server.port(), port);
  httplib::Client client("127.0.0.1", port);
  httplib::Result result = client.Get("/metrics");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
}

TEST_F(MetricsHttpServerTest, StopRightAfterStartReturns) {
  // stop() before httplib's listen loop runs would be lost; Start waits for it.
  for (int i = 0; i < 20; ++i) {
    MetricsHttpServer server(&registry_);
    ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
    server.Stop();
  }
}

}  // namespace
}  // namespace polar
