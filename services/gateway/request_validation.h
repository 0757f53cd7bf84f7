// Checks a public GenerateRequest before it costs anything (tokenization, a
// queue slot, a worker), and resolves the API's defaults into the concrete
// values a WorkerRequest carries. Every failure is INVALID_ARGUMENT naming
// the field (FAILED_PRECONDITION for chat input on a model without a chat
// template), so a client can fix its request from the message alone. The
// sampling checks are the engine's own (SamplingParams::Validate), so the
// gateway and the worker never disagree on what is valid.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/runtime/sampler.h"
#include "polar/v1/gateway.pb.h"
#include "polar/v1/worker.pb.h"

namespace polar {

// What the gateway knows of the served model and its own limits.
struct RequestLimits {
  int32_t vocab_size = 0;
  int32_t max_context_tokens = 0;
  bool has_chat_template = false;
  int32_t max_stop_sequences = 16;
  int32_t max_stop_bytes = 256;
  int32_t max_logprobs = 20;
  int32_t default_max_tokens = 256;
  int32_t max_request_id_bytes = 128;

  // Longest prompt: the context minus one generated token.
  int32_t max_prompt_tokens() const { return max_context_tokens - 1; }
};

// Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool IsValidUtf8(std::string_view text);

// Everything that can be checked before tokenization.
absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request, const RequestLimits& limits);

// Same for Tokenize: input present, non-empty, valid UTF-8, chat supported.
absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& request, const RequestLimits& limits);

// After tokenization: the prompt is non-empty and leaves room for one token.
absl::Status ValidatePromptLength(int64_t prompt_tokens, const RequestLimits& limits);

// The request's sampling with the API's defaults filled in and `seed` used
// when the request sets none; validated with SamplingParams::Validate.
absl::StatusOr<SamplingParams> ResolveSampling(const v1::GenerateRequest& request, const RequestLimits& limits,
                                               uint64_t default_seed);

// The WorkerRequest for a validated request: resolved sampling, max_tokens
// defaulted and clamped so prompt plus generation fits the context.
v1::WorkerRequest MakeWorkerRequest(const v1::GenerateRequest& request, const SamplingParams& sampling,
                                    const std::vector<int32_t>& prompt_ids, const RequestLimits& limits);

}  // namespace polar
