// See model_runner.h.
#include "engine/runtime/model_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/runtime/scheduler.h"
#include "kernels/cpu/threads.h"

namespace polar {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(Checkpoint checkpoint,
                                                                  const RunnerOptions& options) {
  if (options.block_size < 1 || options.max_batch_tokens < 1 || options.max_num_seqs < 1) {
    return absl::InvalidArgumentError("block_size, max_batch_tokens and max_num_seqs must be >= 1");
  }
  std::unique_ptr<ModelRunner> runner(new ModelRunner(std::move(checkpoint), options));
  if (absl::Status s = runner->Init(); !s.ok()) return s;
  return runner;
}

void ModelRunner::BindThreadCount() const { kernels::cpu::SetNumThreads(options_.threads); }

absl::Status ModelRunner::Init() {
  BindThreadCount();
  backend_ = CreateCpuBackend();
  absl::StatusOr<std::unique_ptr<TransformerModel>> model =
      CreateTransformer(checkpoint_, *backend_, options_.max_batch_tokens);
  if (!model.ok()) return model.status();
  model_ = std::move(*model);

  const ModelConfig& c = checkpoint_.config;
  KvCacheLayout layout;
  layout.num_layers = c.num_layers;
  layout.block_size = options_.block_size;
  layout.num_kv_heads = c.num_kv_heads;
  layout.head_dim = c.head_dim;
  layout.num_blocks = options_.num_kv_blocks > 0
                          ? options_.num_kv_blocks
                          : options_.kv_cache_bytes / layout.BytesPerBlock(sizeof(float));
  if (layout.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", options_.kv_cache_bytes,
                                                   " bytes holds no block of ",
                                                   layout.BytesPerBlock(sizeof(float)), " bytes"));
  }
  if (absl::Status s = backend_->AllocateKvCache(layout); !s.ok()) return s;
  allocator_ = std::make_unique<BlockAllocator>(layout.num_blocks);
  if (!options_.head_routers.empty()) {
    absl::StatusOr<HeadRouters> routers = HeadRouters::Load(options_.head_routers, c);
    if (!routers.ok()) return routers.status();
    if (absl::Status s = model_->heads().SetRouters(*routers); !s.ok()) return s;
  }
  if (!options_.mlp_routers.empty()) {
    if (model_->mlp() == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          options_.mlp_routers, ": MLP routers need a ReLU model (OPT); this model's MLP is SwiGLU (",
          c.model_type, "), which has no MLP sparsity"));
    }
    absl::StatusOr<MlpRouters> routers = MlpRouters::Load(options_.mlp_routers, c);
    if (!routers.ok()) return routers.status();
    if (absl::Status s = model_->mlp()->SetRouters(*routers); !s.ok()) return s;
  }
  const float d = options_.default_density;
  if (d != 0.0f && !(d > 0.0f && d <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("default density ", d, " is not in (0, 1]"));
  }
  if (d > 0.0f && d < 1.0f && options_.head_routers.empty() && options_.mlp_routers.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("default density ", d, " needs head routers (--routers) or MLP routers (--mlp-routers)"));
  }
  return absl::OkStatus();
}

float ModelRunner::default_density() const {
  const HeadRouters* routers = model_->heads().routers();
  if (routers == nullptr) return 1.0f;
  return options_.default_density > 0.0f ? options_.default_density : routers->default_density;
}

absl::StatusOr<float> ModelRunner::ResolveDensity(float requested) const {
  if (requested == 0.0f) return default_density();
  if (!(requested > 0.0f && requested <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("density ", requested, " is not in (0, 1]"));
  }
  const bool mlp_routed = model_->mlp() != nullptr && model_->mlp()->routers() != nullptr;
  if (requested < 1.0f && model_->heads().routers() == nullptr && !mlp_routed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "density ", requested, " needs head routers (--routers) or MLP routers (--mlp-routers), and none are loaded"));
  }
  return requested;
}

absl::Status ModelRunner::AddToStep(SequenceKv& kv, std::span<const int32_t> tokens, bool want_logits,
                                    float density) {
  if (!(density > 0.0f && density <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("density ", density, " is not in (0, 1]"));
  }
  const int64_t start = kv.length();
  const int64_t end = start + static_cast<int64_t>(tokens.size());
  if (end > config().max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", end, " tokens exceeds the model's ",
                                              config().max_position_embeddings, " positions"));
  }
  if (!kv.Reserve(*allocator_, end)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache full: ", allocator_->num_free(), " free blocks of ", allocator_->num_blocks(),
        "; raise --kv-cache-bytes or lower the batch"));
  }
  if (step_.q_indptr.empty()) {
    step_.q_indptr.push_back(0);
    step_.block_indptr.push_back(0);
  }
  for (int64_t i = 0; i < static_cast<int64_t>(tokens.size()); ++i) {
    step_.token_ids.push_back(tokens[i]);
    step_.positions.push_back(static_cast<int32_t>(start + i));
    step_.kv_slots.push_back(kv.Slot(start + i));
  }
  step_.q_indptr.push_back(static_cast<int32_t>(step_.token_ids.size()));
  step_.context_lens.push_back(static_cast<int32_t>(end));
  step_.block_ids.insert(step_.block_ids.end(), kv.blocks().begin(), kv.blocks().end());
  step_.block_indptr.push_back(static_cast<int32_t>(step_.block_ids.size()));
  if (want_logits) step_.logit_rows.push_back(static_cast<int32_t>(step_.token_ids.size() - 1));
  step_.density.push_back(density);
  kv.set_length(end);
  return absl::OkStatus();
}

absl::Status ModelRunner::RunStep(std::vector<float>& logits) {
  logits.resize(step_.logit_rows.size() * config().vocab_size);
  if (absl::Status s = backend_->BeginStep(step_); !s.ok()) return s;
  return model_->Forward(step_, logits.data());
}

absl::StatusOr<std::vector<float>> ModelRunner::ScoreTokens(std::span<const int32_t> tokens,
                                                            int32_t chunk) {
  chunk = std::clamp<int32_t>(chunk, 1, options_.max_batch_tokens);
  for (int32_t t : tokens) {
    if (t < 0 || t >= config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t, " outside the vocabulary"));
    }
  }
  const int64_t vocab = config().vocab_size;
  std::vector<float> all(tokens.size() * vocab);
  std::vector<float> logits;
  SequenceKv kv(options_.block_size);
  absl::Status status;
  for (size_t begin = 0; begin < tokens.size() && status.ok(); begin += chunk) {
    const size_t n = std::min<size_t>(chunk, tokens.size() - begin);
    step_.Clear();
    status = AddToStep(kv, tokens.subspan(begin, n), /*want_logits=*/false, /*density=*/1.0f);
    if (!status.ok()) break;
    for (size_t i = 0; i < n; ++i) step_.logit_rows.push_back(static_cast<int32_t>(i));
    status = RunStep(logits);
    if (status.ok()) std::copy(logits.begin(), logits.end(), all.begin() + begin * vocab);
  }
  kv.Release(*allocator_);
  if (!status.ok()) return status;
  return all;
}

absl::StatusOr<std::vector<GenerationResult>> ModelRunner::Generate(
    std::span<const GenerationRequest> requests, std::span<const int32_t> end_of_generation_ids,
    const TokenCallback& on_token) {
  SchedulerOptions options;
  options.end_of_generation_ids.assign(end_of_generation_ids.begin(), end_of_generation_ids.end());
  StepScheduler scheduler(*this, std::move(options));
  std::vector<GenerationResult> results(requests.size());
  std::vector<uint64_t> to_cancel;  // StepScheduler must not be re-entered from an event
  absl::Status failure;
  auto on_event = [&](const TokenEvent& e) {
    GenerationResult& result = results[e.id];
    if (e.token >= 0) {
      result.tokens.push_back(e.token);
      if (on_token != nullptr && !on_token(e.id, e.token) && !e.finished) to_cancel.push_back(e.id);
    }
    if (e.finished) {
      result.finish_reason = e.finish_reason;
      if (e.finish_reason == FinishReason::kError && failure.ok()) failure = e.status;
    }
  };
  std::vector<SequenceRequest> sequences(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SequenceRequest& r = sequences[i];
    r.id = i;
    r.prompt = requests[i].prompt;
    r.params = requests[i].params;
    r.density = requests[i].density;
    r.on_event = on_event;
    // All or nothing: a bad request fails the call before any work.
    if (absl::Status s = scheduler.Validate(r); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("request ", i, ": ", s.message()));
    }
  }
  for (SequenceRequest& r : sequences) scheduler.Add(std::move(r));
  while (failure.ok() && scheduler.Step()) {
    for (uint64_t id : to_cancel) scheduler.Cancel(id);
    to_cancel.clear();
  }
  if (!failure.ok()) return failure;
  return results;
}

}  // namespace polar
