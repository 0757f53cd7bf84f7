// See worker_pool.h. Polling (rather than one WatchLoad stream per worker)
// keeps the failure handling trivial: a worker that does not answer a poll
// within its deadline is simply not ready until the next one that does.
#include "services/gateway/worker_pool.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "services/common/status_mapping.h"
#include "services/gateway/dns_resolver.h"

namespace polar {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(2);
// The tokenizer can be megabytes (128k-token vocabularies).
constexpr absl::Duration kTokenizerTimeout = absl::Seconds(30);

std::shared_ptr<WorkerHandle> MakeHandle(const std::string& address) {
  auto handle = std::make_shared<WorkerHandle>();
  handle->address = address;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // GetTokenizer answers can exceed 4 MiB
  handle->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  handle->stub = v1::Worker::NewStub(handle->channel);
  return handle;
}

void SetDeadline(grpc::ClientContext& ctx, absl::Duration timeout) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

bool HasPort(const std::string& address) {
  // host:port or [v6]:port
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  int port = 0;
  return absl::SimpleAtoi(address.substr(colon + 1), &port) && port > 0 && port < 65536;
}

}  // namespace

absl::StatusOr<WorkerTargets> ParseWorkerTargets(const std::string& spec) {
  WorkerTargets targets;
  absl::string_view rest(spec);
  if (absl::ConsumePrefix(&rest, "dns:///")) {
    std::string target(rest);
    size_t colon = target.rfind(':');
    if (colon == std::string::npos || !HasPort(target) || colon == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--workers: expected dns:///NAME:PORT, got \"", spec, "\""));
    }
    targets.dns_host = target.substr(0, colon);
    targets.dns_port = target.substr(colon + 1);
    return targets;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::string address(absl::StripAsciiWhitespace(part));
    if (!HasPort(address)) {
      return absl::InvalidArgumentError(absl::StrCat("--workers: \"", address, "\" is not HOST:PORT"));
    }
    targets.static_addresses.push_back(address);
  }
  if (targets.static_addresses.empty()) {
    return absl::InvalidArgumentError("--workers: give HOST:PORT[,HOST:PORT...] or dns:///NAME:PORT");
  }
  return targets;
}

absl::StatusOr<TokenizerData> TokenizerDataFromProto(const v1::Tokenizer& proto) {
  TokenizerData data;
  data.source = proto.source();
  data.tokens.assign(proto.tokens().begin(), proto.tokens().end());
  if (proto.token_types_size() != proto.tokens_size()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", proto.tokens_size(), " tokens but ",
                                                   proto.token_types_size(), " token types"));
  }
  data.types.reserve(proto.token_types_size());
  for (int type : proto.token_types()) data.types.push_back(static_cast<TokenType>(type));
  data.merges.reserve(proto.merges_size());
  for (const v1::Merge& merge : proto.merges()) data.merges.emplace_back(merge.left(), merge.right());
  for (int stage : proto.pre_tokenizer()) {
    if (stage <= 0) return absl::InvalidArgumentError("tokenizer: unset pre-tokenizer stage");
    // The proto numbers are the engine's plus one (proto3 reserves 0).
    data.pre_tokenizer.push_back(static_cast<PreTokenizerStage>(stage - 1));
  }
  data.pre_tokenizer_name = proto.pre_tokenizer_name();
  data.ignore_merges = proto.ignore_merges();
  data.add_prefix_space = proto.add_prefix_space();
  data.normalize_nfc = proto.normalize_nfc();
  data.unk_for_unknown_bytes = proto.unk_for_unknown_bytes();
  data.fuse_unk = proto.fuse_unk();
  data.bos_id = proto.has_bos_id() ? proto.bos_id() : -1;
  data.eos_id = proto.has_eos_id() ? proto.eos_id() : -1;
  data.unk_id = proto.has_unk_id() ? proto.unk_id() : -1;
  data.pad_id = proto.has_pad_id() ? proto.pad_id() : -1;
  data.eot_id = proto.has_eot_id() ? proto.eot_id() : -1;
  data.eom_id = proto.has_eom_id() ? proto.eom_id() : -1;
  data.fim_pad_id = proto.has_fim_pad_id() ? proto.fim_pad_id() : -1;
  data.fim_rep_id = proto.has_fim_rep_id() ? proto.fim_rep_id() : -1;
  data.fim_sep_id = proto.has_fim_sep_id() ? proto.fim_sep_id() : -1;
  data.add_bos = proto.add_bos();
  data.add_eos = proto.add_eos();
  data.lstrip_ids.assign(proto.lstrip_ids().begin(), proto.lstrip_ids().end());
  data.rstrip_ids.assign(proto.rstrip_ids().begin(), proto.rstrip_ids().end());
  data.chat_template = proto.chat_template();
  return data;
}

WorkerPool::WorkerPool(WorkerTargets targets, absl::Duration poll_interval, absl::Duration dns_interval)
    : targets_(std::move(targets)), poll_interval_(poll_interval), dns_interval_(dns_interval) {
  absl::MutexLock lock(&mu_);
  for (const std::string& address : targets_.static_addresses) workers_.push_back(MakeHandle(address));
}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Start() {
  Resolve();
  PollOnce();
  thread_ = std::thread([this] { PollLoop(); });
}

void WorkerPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void WorkerPool::PollLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&stopping), poll_interval_);
      if (stop_) return;
    }
    Resolve();
    PollOnce();
  }
}

void WorkerPool::Resolve() {
  if (targets_.dns_host.empty()) return;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Now() - last_resolve_ < dns_interval_) return;
    last_resolve_ = absl::Now();
  }
  // A failed lookup keeps the workers we had: DNS hiccups must not empty the
  // pool. A name with no address left (every pod gone) does empty it.
  absl::StatusOr<std::vector<std::string>> resolved =
      ResolveAllAddresses(targets_.dns_host, targets_.dns_port, targets_.dns_server, absl::Seconds(2));
  if (!resolved.ok() && !absl::IsNotFound(resolved.status())) return;
  std::set<std::string> addresses;
  if (resolved.ok()) addresses.insert(resolved->begin(), resolved->end());
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<WorkerHandle>> next;
  for (auto& worker : workers_) {
    if (addresses.erase(worker->address) > 0) next.push_back(worker);  // keep its channel
  }
  for (const std::string& address : addresses) next.push_back(MakeHandle(address));
  workers_ = std::move(next);
}

void WorkerPool::PollOnce() {
  std::vector<std::shared_ptr<WorkerHandle>> workers;
  bool need_model;
  {
    absl::MutexLock lock(&mu_);
    workers = workers_;
    need_model = model_ == nullptr;
  }
  for (auto& worker : workers) {
    grpc::ClientContext ctx;
    SetDeadline(ctx, kRpcTimeout);
    v1::LoadReport report;
    grpc::Status status = worker->stub->GetLoad(&ctx, v1::GetLoadRequest(), &report);
    const bool healthy = status.ok() && report.ready() && !report.draining();
    if (healthy && need_model) {
      FetchModel(*worker);
      absl::MutexLock lock(&mu_);
      need_model = model_ == nullptr;
    }
    // A worker takes requests (and counts in polar_workers_ready) only once
    // the gateway knows the model and tokenizer it serves.
    const bool ready = healthy && !need_model;
    {
      absl::MutexLock lock(&worker->mu);
      worker->ready = ready;
      if (status.ok()) worker->load = report;
    }
    worker->dispatched_since_report.store(0, std::memory_order_relaxed);
  }
}

void WorkerPool::FetchModel(WorkerHandle& worker) {
  auto served = std::make_shared<ServedModel>();
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, kRpcTimeout);
    if (!worker.stub->GetModelInfo(&ctx, v1::GetWorkerInfoRequest(), &served->info).ok()) return;
  }
  v1::Tokenizer proto;
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, kTokenizerTimeout);
    if (!worker.stub->GetTokenizer(&ctx, v1::GetTokenizerRequest(), &proto).ok()) return;
  }
  auto data = TokenizerDataFromProto(proto);
  if (!data.ok()) return;
  auto tokenizer = Tokenizer::FromData(*std::move(data));
  if (!tokenizer.ok()) return;
  served->tokenizer = *std::move(tokenizer);
  absl::MutexLock lock(&mu_);
  model_ = std::move(served);
}

std::shared_ptr<const ServedModel> WorkerPool::model() const {
  absl::MutexLock lock(&mu_);
  return model_;
}

std::shared_ptr<const ServedModel> WorkerPool::WaitForModel(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto has_model = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return model_ != nullptr; };
  mu_.AwaitWithTimeout(absl::Condition(&has_model), timeout);
  return model_;
}

std::shared_ptr<WorkerHandle> WorkerPool::Pick(const std::set<std::string>& exclude) const {
  std::vector<std::shared_ptr<WorkerHandle>> workers;
  {
    absl::MutexLock lock(&mu_);
    workers = workers_;
  }
  std::shared_ptr<WorkerHandle> best;
  int64_t best_load = std::numeric_limits<int64_t>::max();
  for (auto& worker : workers) {
    if (exclude.count(worker->address) > 0) continue;
    int64_t load;
    {
      absl::MutexLock lock(&worker->mu);
      if (!worker->ready) continue;
      load = worker->load.running() + worker->load.waiting();
    }
    load += worker->dispatched_since_report.load(std::memory_order_relaxed);
    if (load < best_load) {
      best_load = load;
      best = worker;
    }
  }
  if (best != nullptr) best->dispatched_since_report.fetch_add(1, std::memory_order_relaxed);
  return best;
}

int WorkerPool::num_workers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(workers_.size());
}

int WorkerPool::num_ready() const {
  std::vector<std::shared_ptr<WorkerHandle>> workers;
  {
    absl::MutexLock lock(&mu_);
    workers = workers_;
  }
  int ready = 0;
  for (auto& worker : workers) {
    absl::MutexLock lock(&worker->mu);
    ready += worker->ready ? 1 : 0;
  }
  return ready;
}

}  // namespace polar
