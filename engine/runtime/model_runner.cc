// See model_runner.h.
#include "engine/runtime/model_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "kernels/cpu/threads.h"

namespace polar {

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(Checkpoint checkpoint,
                                                                  const RunnerOptions& options) {
  if (options.block_size < 1 || options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("block_size and max_batch_tokens must be >= 1");
  }
  std::unique_ptr<ModelRunner> runner(new ModelRunner(std::move(checkpoint), options));
  if (absl::Status s = runner->Init(); !s.ok()) return s;
  return runner;
}

absl::Status ModelRunner::Init() {
  kernels::cpu::SetNumThreads(options_.threads);
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
  return absl::OkStatus();
}

absl::Status ModelRunner::AddToStep(SequenceKv& kv, std::span<const int32_t> tokens, bool want_logits) {
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
    status = AddToStep(kv, tokens.subspan(begin, n), /*want_logits=*/false);
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
  struct Active {
    SequenceKv kv;
    SequenceSampler sampler;
    std::vector<int32_t> history;  // prompt + generated
    bool done = false;
  };
  std::vector<Active> seqs;
  seqs.reserve(requests.size());
  for (const GenerationRequest& r : requests) {
    if (r.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
    if (absl::Status s = r.params.Validate(static_cast<int32_t>(config().vocab_size)); !s.ok()) return s;
    for (int32_t t : r.prompt) {
      if (t < 0 || t >= config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", t, " outside the vocabulary"));
      }
    }
    seqs.push_back(Active{SequenceKv(options_.block_size), SequenceSampler(r.params), r.prompt});
  }
  std::vector<GenerationResult> results(requests.size());
  std::vector<float> logits;
  std::vector<size_t> logit_owner;  // request index of each logit row
  absl::Status status;
  while (status.ok()) {
    // Pack the step: every sequence's not-yet-cached tokens (its prompt tail,
    // or the token sampled last step), within the per-step token budget.
    step_.Clear();
    logit_owner.clear();
    int64_t budget = options_.max_batch_tokens;
    for (size_t i = 0; i < seqs.size() && budget > 0 && status.ok(); ++i) {
      Active& s = seqs[i];
      if (s.done) continue;
      const int64_t pending = static_cast<int64_t>(s.history.size()) - s.kv.length();
      const int64_t take = std::min(pending, budget);
      const bool completes = take == pending;
      status = AddToStep(s.kv, std::span(s.history).subspan(s.kv.length(), take), completes);
      budget -= take;
      if (completes) logit_owner.push_back(i);
    }
    if (!status.ok() || step_.token_ids.empty()) break;
    status = RunStep(logits);
    if (!status.ok()) break;
    for (size_t row = 0; row < logit_owner.size(); ++row) {
      const size_t i = logit_owner[row];
      Active& s = seqs[i];
      std::span<float> row_logits(logits.data() + row * config().vocab_size, config().vocab_size);
      const int32_t token = s.sampler.Sample(row_logits, s.history);
      GenerationResult& result = results[i];
      result.tokens.push_back(token);
      s.history.push_back(token);
      const bool keep_going = on_token == nullptr || on_token(i, token);
      if (IsStopToken(requests[i].params, end_of_generation_ids, token) || !keep_going) {
        result.finish_reason = FinishReason::kStop;
        s.done = true;
      } else if (static_cast<int32_t>(result.tokens.size()) >= requests[i].params.max_tokens ||
                 static_cast<int64_t>(s.history.size()) >= config().max_position_embeddings) {
        result.finish_reason = FinishReason::kLength;
        s.done = true;
      }
      if (s.done) s.kv.Release(*allocator_);
    }
  }
  for (Active& s : seqs) s.kv.Release(*allocator_);
  if (!status.ok()) return status;
  return results;
}

}  // namespace polar
