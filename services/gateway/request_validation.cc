// See request_validation.h. Messages follow one shape, "<field>: <what is
// wrong> (<the limit>)", so clients and logs can grep for the field.
#include "services/gateway/request_validation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

absl::Status Invalid(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(what)));
}

absl::Status ValidateChat(const v1::ChatMessages& chat, const RequestLimits& limits) {
  if (chat.messages().empty()) return Invalid("chat.messages", "must hold at least one message");
  if (!limits.has_chat_template) {
    return absl::FailedPreconditionError("chat: the served model has no chat template; send text or token_ids");
  }
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& message = chat.messages(i);
    if (message.role().empty()) return Invalid(absl::StrCat("chat.messages[", i, "].role"), "must not be empty");
    if (!IsValidUtf8(message.role())) {
      return Invalid(absl::StrCat("chat.messages[", i, "].role"), "is not valid UTF-8");
    }
    if (!IsValidUtf8(message.content())) {
      return Invalid(absl::StrCat("chat.messages[", i, "].content"), "is not valid UTF-8");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDensity(const v1::Density& density) {
  const float value = density.value();
  switch (density.mode()) {
    case v1::DENSITY_MODE_UNSPECIFIED:
    case v1::DENSITY_MODE_CALIBRATED:
    case v1::DENSITY_MODE_DENSE:
      if (value != 0.0f) return Invalid("density.value", "must be 0 (unset) unless mode is DENSITY_MODE_FIXED");
      return absl::OkStatus();
    case v1::DENSITY_MODE_FIXED:
      if (!(value > 0.0f && value <= 1.0f)) {
        return Invalid("density.value", absl::StrCat("must be in (0, 1] with DENSITY_MODE_FIXED, got ", value));
      }
      return absl::OkStatus();
    default:
      return Invalid("density.mode", absl::StrCat("unknown mode ", static_cast<int>(density.mode())));
  }
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((b0 & 0xE0) == 0xC0) {
      len = 2;
      cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3;
      cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4;
      cp = b0 & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& request, const RequestLimits& limits) {
  switch (request.input_case()) {
    case v1::GenerateRequest::INPUT_NOT_SET:
      return Invalid("input", "exactly one of text, token_ids or chat must be set");
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return Invalid("text", "must not be empty");
      if (!IsValidUtf8(request.text())) return Invalid("text", "is not valid UTF-8");
      break;
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return Invalid("token_ids.ids", "must hold at least one token id");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= limits.vocab_size) {
          return Invalid(absl::StrCat("token_ids.ids[", i, "]"),
                         absl::StrCat(ids[i], " is outside [0, ", limits.vocab_size, ")"));
        }
      }
      if (auto status = ValidatePromptLength(ids.size(), limits); !status.ok()) return status;
      break;
    }
    case v1::GenerateRequest::kChat:
      if (auto status = ValidateChat(request.chat(), limits); !status.ok()) return status;
      break;
  }

  if (request.has_max_tokens() && request.max_tokens() < 1) {
    return Invalid("max_tokens", absl::StrCat("must be >= 1, got ", request.max_tokens()));
  }
  if (request.stop_size() > limits.max_stop_sequences) {
    return Invalid("stop", absl::StrCat("at most ", limits.max_stop_sequences, " stop sequences, got ",
                                        request.stop_size()));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& stop = request.stop(i);
    const std::string field = absl::StrCat("stop[", i, "]");
    if (stop.empty()) return Invalid(field, "must not be empty");
    if (static_cast<int32_t>(stop.size()) > limits.max_stop_bytes) {
      return Invalid(field, absl::StrCat("longer than ", limits.max_stop_bytes, " bytes"));
    }
    if (!IsValidUtf8(stop)) return Invalid(field, "is not valid UTF-8");
  }
  if (request.has_logprobs() && (request.logprobs() < 0 || request.logprobs() > limits.max_logprobs)) {
    return Invalid("logprobs", absl::StrCat("must be in [0, ", limits.max_logprobs, "], got ", request.logprobs()));
  }
  if (request.has_request_id()) {
    const std::string& id = request.request_id();
    if (id.empty()) return Invalid("request_id", "must not be empty when set");
    if (static_cast<int32_t>(id.size()) > limits.max_request_id_bytes) {
      return Invalid("request_id", absl::StrCat("longer than ", limits.max_request_id_bytes, " characters"));
    }
    for (char c : id) {
      if (c < 0x21 || c > 0x7E) return Invalid("request_id", "must be printable ASCII without spaces");
    }
  }
  if (auto status = ValidateDensity(request.density()); !status.ok()) return status;
  // stop_token_ids, sampling: the engine's own checks.
  auto sampling = ResolveSampling(request, limits, /*default_seed=*/0);
  return sampling.status();
}

absl::Status ValidateTokenizeRequest(const v1::TokenizeRequest& request, const RequestLimits& limits) {
  switch (request.input_case()) {
    case v1::TokenizeRequest::INPUT_NOT_SET:
      return Invalid("input", "exactly one of text or chat must be set");
    case v1::TokenizeRequest::kText:
      if (!IsValidUtf8(request.text())) return Invalid("text", "is not valid UTF-8");
      return absl::OkStatus();
    case v1::TokenizeRequest::kChat:
      return ValidateChat(request.chat(), limits);
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptLength(int64_t prompt_tokens, const RequestLimits& limits) {
  if (prompt_tokens < 1) return Invalid("input", "the prompt tokenizes to no tokens");
  if (prompt_tokens > limits.max_prompt_tokens()) {
    return Invalid("input", absl::StrCat("the prompt has ", prompt_tokens, " tokens; the model's context of ",
                                         limits.max_context_tokens, " tokens allows at most ",
                                         limits.max_prompt_tokens()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SamplingParams> ResolveSampling(const v1::GenerateRequest& request, const RequestLimits& limits,
                                               uint64_t default_seed) {
  SamplingParams params;
  const v1::SamplingParams& in = request.sampling();
  if (in.has_temperature()) params.temperature = in.temperature();
  if (in.has_top_k()) params.top_k = in.top_k();
  if (in.has_top_p()) params.top_p = in.top_p();
  if (in.has_repetition_penalty()) params.repetition_penalty = in.repetition_penalty();
  params.seed = in.has_seed() ? in.seed() : default_seed;
  params.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  params.ignore_eos = request.ignore_eos();
  params.max_tokens = request.has_max_tokens() ? request.max_tokens() : limits.default_max_tokens;
  if (auto status = params.Validate(limits.vocab_size); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", std::string(status.message())));
  }
  return params;
}

v1::WorkerRequest MakeWorkerRequest(const v1::GenerateRequest& request, const SamplingParams& sampling,
                                    const std::vector<int32_t>& prompt_ids, const RequestLimits& limits) {
  v1::WorkerRequest out;
  out.mutable_prompt_token_ids()->Assign(prompt_ids.begin(), prompt_ids.end());
  v1::WorkerSampling* s = out.mutable_sampling();
  s->set_temperature(sampling.temperature);
  s->set_top_k(sampling.top_k);
  s->set_top_p(sampling.top_p);
  s->set_repetition_penalty(sampling.repetition_penalty);
  s->set_seed(sampling.seed);
  out.mutable_stop_token_ids()->Assign(sampling.stop_token_ids.begin(), sampling.stop_token_ids.end());
  out.set_ignore_eos(sampling.ignore_eos);
  const int64_t room = static_cast<int64_t>(limits.max_context_tokens) - static_cast<int64_t>(prompt_ids.size());
  out.set_max_tokens(static_cast<int32_t>(std::max<int64_t>(1, std::min<int64_t>(sampling.max_tokens, room))));
  if (request.has_logprobs()) out.set_logprobs(request.logprobs());
  *out.mutable_density() = request.density();
  return out;
}

}  // namespace polar
