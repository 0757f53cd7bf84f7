// Token sampling for one sequence: repetition penalty, temperature, top-k,
// top-p (nucleus), then one draw from the remaining distribution.
//
// Every sequence owns its SequenceSampler, and the sampler owns its random
// stream, so a sequence's output depends only on (seed, its logits, its
// history) and never on what else shares the batch or on the order in which
// the engine visits sequences. The stream is counter-based (the n-th call
// uses the n-th SplitMix64 output of the seed), so it is trivially
// reproducible on another backend (a CUDA sampler can compute the same
// uniform from (seed, step) without carrying generator state).
//
// Order of operations (the same as Hugging Face's logits processors and vLLM):
//   1. repetition penalty (CTRL): for each distinct id in the history
//      (prompt + generated), logit > 0 -> logit / p, else logit * p;
//   2. temperature: logit / T (T < 1e-5, including 0, means greedy argmax,
//      ties -> lowest id; vLLM treats temperatures below 1e-5 the same way);
//   3. top-k: keep the k largest (ties at the boundary -> lowest ids);
//   4. top-p: keep the smallest prefix of the remaining tokens, sorted by
//      probability (ties -> lowest id), whose probability mass is >= p;
//   5. draw one token from the renormalised kept set with one uniform.
//
// Non-finite logits (a model bug, never user input) have a defined result:
// NaN counts as -inf; if some logits are +inf the draw is uniform over them;
// if every logit is -inf the draw is uniform over the whole vocabulary.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace polar {

// Temperatures below this are greedy (argmax).
inline constexpr float kGreedyTemperatureEpsilon = 1e-5f;

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax, ties -> lowest id)
  int32_t top_k = 0;                // 0 = off; values >= vocab are also off
  float top_p = 1.0f;               // nucleus; 1 = off
  float repetition_penalty = 1.0f;  // 1 = off; see the file comment
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;  // extra ids that end the sequence
  bool ignore_eos = false;              // keep going past end-of-generation ids
  int32_t max_tokens = 128;             // generated tokens, at least 1

  bool greedy() const { return temperature < kGreedyTemperatureEpsilon; }

  // INVALID_ARGUMENT naming the field for: NaN or infinite values, negative
  // temperature, top_p outside (0, 1], top_k < 0, repetition_penalty <= 0,
  // stop ids outside [0, vocab_size), max_tokens < 1, vocab_size < 1.
  absl::Status Validate(int32_t vocab_size) const;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleOutput {
  int32_t token = -1;
  // Log-probability of `token` and the top-n alternatives (sorted by logprob,
  // descending; ties -> lowest id). The distribution is the log-softmax over
  // the full vocabulary AFTER repetition penalty and temperature but BEFORE
  // top-k/top-p truncation, i.e. the distribution the token was sampled from
  // before truncation (greedy requests use temperature 1 here). A truncated
  // distribution would give -inf to most alternatives, which is useless to
  // clients asking "what else was likely".
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
};

class SequenceSampler {
 public:
  // `params` should have passed Validate(); out-of-range values are clamped
  // to their nearest meaning rather than trusted (top_k > vocab = off, ...).
  explicit SequenceSampler(const SamplingParams& params);

  // logits: [vocab] of this sequence; modified (used as scratch).
  // history: prompt + generated ids (ids outside [0, vocab) are ignored).
  // Consumes exactly one uniform from the stream, greedy or not.
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

  // Sample() plus log-probabilities of the chosen token and of the `top_n`
  // most likely tokens (top_n <= 0: none; clamped to the vocabulary size).
  // Draws the same token as Sample() would for the same inputs and step.
  SampleOutput SampleWithLogprobs(std::span<float> logits, std::span<const int32_t> history,
                                  int32_t top_n);

  const SamplingParams& params() const { return params_; }
  // Calls to Sample/SampleWithLogprobs so far; the next one uses uniform steps().
  uint64_t steps() const { return step_; }

  // The n-th uniform in [0, 1) of the stream of `seed` (53-bit resolution).
  static double Uniform(uint64_t seed, uint64_t n);

 private:
  int32_t SampleImpl(std::span<float> logits, std::span<const int32_t> history, int32_t top_n,
                     SampleOutput* out);
  void ApplyRepetitionPenalty(std::span<float> logits, std::span<const int32_t> history);
  // Fills `candidates_` with the k best (value, id) pairs, best first.
  void TopCandidates(std::span<const float> logits, int64_t k);

  SamplingParams params_;
  uint64_t step_ = 0;
  // Scratch reused across calls so a step allocates nothing once warm.
  std::vector<int32_t> seen_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// True when `token` ends the sequence: one of params.stop_token_ids, or one of
// the model's end-of-generation ids (`eog_ids`) unless params.ignore_eos.
bool IsStopToken(const SamplingParams& params, std::span<const int32_t> eog_ids, int32_t token);

}  // namespace polar
