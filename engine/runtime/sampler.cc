// SequenceSampler: see sampler.h for the order of operations and the
// random-stream contract. Costs for a vocabulary V: one fused pass (NaN,
// temperature, max), one exp pass when the full normaliser is needed
// (untruncated draws, top-p, logprobs), which also leaves the row holding
// exp(x - max) so the draw needs no second exp. Top-k selects with a bounded
// heap (k <= 1024; nth_element above), sorting only the k winners. Top-p
// alone never sorts the vocabulary: it collects the tokens above a
// probability cut and sorts those, loosening the cut only if they hold less
// than p.
#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"

namespace polar {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// Candidates are (value, id). First-best order: larger value first, ties
// broken by the lower id, so every selection is a deterministic function of
// the logits. A functor (not a function pointer) so that sort/nth_element
// inline it.
struct Better {
  bool operator()(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) const {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
};

// Above this k a bounded heap costs more than one nth_element.
constexpr int64_t kHeapSelectMaxK = 1024;

// Top-p alone collects the tokens whose probability (relative to the best
// token's) is at least one of these cuts, loosest last: most distributions
// reach p within the first cut, so only a few hundred candidates get sorted.
constexpr float kTopPCuts[] = {1e-4f, 1e-9f, 0.0f};

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("sampling params: ", message));
}

}  // namespace

absl::Status SamplingParams::Validate(int32_t vocab_size) const {
  if (vocab_size < 1) return Invalid(absl::StrCat("vocab_size must be >= 1, got ", vocab_size));
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return Invalid(absl::StrCat("temperature must be a finite number >= 0, got ", temperature));
  }
  if (top_k < 0) return Invalid(absl::StrCat("top_k must be >= 0 (0 = off), got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {  // also rejects NaN
    return Invalid(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f) {
    return Invalid(absl::StrCat("repetition_penalty must be a finite number > 0, got ",
                                repetition_penalty));
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return Invalid(absl::StrCat("stop_token_ids: id ", id, " is outside the vocabulary [0, ",
                                  vocab_size, ")"));
    }
  }
  if (max_tokens < 1) return Invalid(absl::StrCat("max_tokens must be >= 1, got ", max_tokens));
  return absl::OkStatus();
}

SequenceSampler::SequenceSampler(const SamplingParams& params) : params_(params) {}

double SequenceSampler::Uniform(uint64_t seed, uint64_t n) {
  // SplitMix64 (Steele, Lea, Flood 2014): the n-th output of the stream that
  // starts at `seed`. Counter-based, so any (seed, n) is computable directly.
  uint64_t z = seed + (n + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t SequenceSampler::Sample(std::span<float> logits, std::span<const int32_t> history) {
  return SampleImpl(logits, history, 0, nullptr);
}

SampleOutput SequenceSampler::SampleWithLogprobs(std::span<float> logits,
                                                 std::span<const int32_t> history,
                                                 int32_t top_n) {
  SampleOutput out;
  out.token = SampleImpl(logits, history, std::max(top_n, 0), &out);
  return out;
}

void SequenceSampler::ApplyRepetitionPenalty(std::span<float> logits,
                                             std::span<const int32_t> history) {
  const float penalty = params_.repetition_penalty;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  seen_.clear();
  for (int32_t id : history) {
    if (id >= 0 && id < vocab) seen_.push_back(id);
  }
  // Once per distinct id, as Hugging Face's gather/scatter does.
  std::sort(seen_.begin(), seen_.end());
  seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
  for (int32_t id : seen_) {
    float& x = logits[id];
    x = x > 0.0f ? x / penalty : x * penalty;
  }
}

void SequenceSampler::TopCandidates(std::span<const float> logits, int64_t k) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  k = std::clamp<int64_t>(k, 0, vocab);
  candidates_.clear();
  if (k == 0) return;
  if (k <= kHeapSelectMaxK && k < vocab) {
    // Bounded heap whose front is the worst kept candidate. Ids arrive in
    // increasing order, so a newcomer beats the front only with a strictly
    // larger value (on a tie the kept one has the lower id). On typical
    // logits almost every token fails that single comparison.
    for (int64_t i = 0; i < k; ++i) candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
    std::make_heap(candidates_.begin(), candidates_.end(), Better());
    for (int64_t i = k; i < vocab; ++i) {
      if (logits[i] > candidates_.front().first) {
        std::pop_heap(candidates_.begin(), candidates_.end(), Better());
        candidates_.back() = {logits[i], static_cast<int32_t>(i)};
        std::push_heap(candidates_.begin(), candidates_.end(), Better());
      }
    }
  } else {
    candidates_.resize(vocab);
    for (int64_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
    if (k < vocab) {
      std::nth_element(candidates_.begin(), candidates_.begin() + k, candidates_.end(), Better());
      candidates_.resize(k);
    }
  }
  std::sort(candidates_.begin(), candidates_.end(), Better());
}

int32_t SequenceSampler::SampleImpl(std::span<float> logits, std::span<const int32_t> history,
                                    int32_t top_n, SampleOutput* out) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (vocab == 0) {
    // The engine always passes a vocabulary-sized row; an empty one is a bug.
    std::fprintf(stderr, "polar: SequenceSampler::Sample called with empty logits\n");
    std::abort();
  }
  const double u = Uniform(params_.seed, step_++);

  if (params_.repetition_penalty != 1.0f) ApplyRepetitionPenalty(logits, history);

  // One pass: NaN -> -inf, temperature, maximum and its lowest id.
  const bool greedy = params_.greedy();
  const float t = greedy ? 1.0f : params_.temperature;
  float max_logit = kNegInf;
  int32_t argmax = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    float x = logits[i];
    if (std::isnan(x)) {
      x = kNegInf;
    } else if (t != 1.0f) {
      x /= t;  // divide, not multiply by 1/t, to match Hugging Face bit for bit
    }
    logits[i] = x;
    if (x > max_logit) {
      max_logit = x;
      argmax = static_cast<int32_t>(i);
    }
  }
  if (!std::isfinite(max_logit)) {
    // +inf: only the +inf entries carry mass, equally. -inf everywhere: no
    // mass anywhere, and the only symmetric choice is uniform.
    const bool some_pos_inf = max_logit == kPosInf;
    for (float& x : logits) x = (!some_pos_inf || x == kPosInf) ? 0.0f : kNegInf;
    max_logit = 0.0f;
    argmax = 0;
    while (logits[argmax] != 0.0f) ++argmax;
  }

  // Log-probabilities need the full normaliser; top-n needs the raw values,
  // so take them before anything below overwrites the row.
  if (out != nullptr && top_n > 0) {
    TopCandidates(logits, top_n);
    out->top_logprobs.resize(candidates_.size());
    for (size_t i = 0; i < candidates_.size(); ++i) {
      out->top_logprobs[i] = {candidates_[i].second, candidates_[i].first};  // logit for now
    }
  }

  // Replaces the row by exp(x - max) (probabilities up to the normaliser,
  // which it returns), so later passes need no exp.
  auto exponentiate = [&]() {
    double total = 0.0;
    for (float& x : logits) {
      x = std::exp(x - max_logit);
      total += x;
    }
    return total;
  };

  const bool use_top_k = params_.top_k > 1 && params_.top_k < vocab;
  const bool use_top_p = params_.top_p < 1.0f;
  int32_t token = -1;
  double chosen_logprob = 0.0;  // filled below when out != nullptr
  double log_total = 0.0;       // log of the full normaliser, relative to max_logit

  if (greedy || params_.top_k == 1) {
    token = argmax;
    if (out != nullptr) {
      log_total = std::log(exponentiate());
      chosen_logprob = -log_total;  // the argmax holds exp(0) = 1
    }
  } else if (!use_top_k && !use_top_p) {
    // Untruncated: inverse CDF over the vocabulary in id order.
    const double total = exponentiate();
    log_total = std::log(total);
    const double target = u * total;
    double cumulative = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (logits[i] <= 0.0f) continue;
      cumulative += logits[i];
      token = static_cast<int32_t>(i);
      if (cumulative > target) break;
    }
    // u * total can round up to total itself; the last token with mass is
    // then the draw. (The max always has mass, so token >= 0 here.)
    chosen_logprob = std::log(static_cast<double>(logits[token])) - log_total;
  } else {
    // Truncated: draw among candidates_[0, kept), best first, each weighted
    // by exp(x - max_logit).
    std::vector<std::pair<float, int32_t>>& cands = candidates_;
    int64_t kept = 0;
    if (use_top_k) {
      TopCandidates(logits, params_.top_k);
      for (auto& c : cands) c.first = std::exp(c.first - max_logit);
      kept = static_cast<int64_t>(cands.size());
      if (out != nullptr) log_total = std::log(exponentiate());
      if (use_top_p) {
        double mass = 0.0;
        for (const auto& c : cands) mass += c.first;
        const double need = static_cast<double>(params_.top_p) * mass;
        double cumulative = 0.0;
        for (int64_t i = 0; i < kept; ++i) {
          cumulative += cands[i].first;
          if (cumulative >= need) {
            kept = i + 1;
            break;
          }
        }
      }
    } else {
      // Top-p alone: the nucleus is a prefix of the tokens sorted by
      // probability, so if the tokens above a cut already hold mass >= p,
      // the nucleus lies among them and only they need sorting.
      const double total = exponentiate();
      log_total = std::log(total);
      const double need = static_cast<double>(params_.top_p) * total;
      for (float cut : kTopPCuts) {
        cands.clear();
        double mass = 0.0;
        for (int64_t i = 0; i < vocab; ++i) {
          if (logits[i] >= cut && logits[i] > 0.0f) {
            cands.emplace_back(logits[i], static_cast<int32_t>(i));
            mass += logits[i];
          }
        }
        if (mass >= need || cut == 0.0f) break;
      }
      std::sort(cands.begin(), cands.end(), Better());
      kept = static_cast<int64_t>(cands.size());  // rounding short of p: keep all
      double cumulative = 0.0;
      for (int64_t i = 0; i < kept; ++i) {
        cumulative += cands[i].first;
        if (cumulative >= need) {
          kept = i + 1;
          break;
        }
      }
    }
    double mass = 0.0;
    for (int64_t i = 0; i < kept; ++i) mass += cands[i].first;
    const double target = u * mass;
    double cumulative = 0.0;
    int64_t chosen = 0;
    for (int64_t i = 0; i < kept; ++i) {
      if (cands[i].first <= 0.0f) break;  // sorted: the rest has no mass either
      cumulative += cands[i].first;
      chosen = i;
      if (cumulative > target) break;
    }
    token = cands[chosen].second;
    chosen_logprob = std::log(static_cast<double>(cands[chosen].first)) - log_total;
  }

  if (out != nullptr) {
    out->logprob = static_cast<float>(chosen_logprob);
    for (TokenLogprob& t : out->top_logprobs) {
      t.logprob = static_cast<float>(static_cast<double>(t.logprob) - max_logit - log_total);
    }
  }
  return token;
}

bool IsStopToken(const SamplingParams& params, std::span<const int32_t> eog_ids, int32_t token) {
  if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) !=
      params.stop_token_ids.end()) {
    return true;
  }
  if (params.ignore_eos) return false;
  return std::find(eog_ids.begin(), eog_ids.end(), token) != eog_ids.end();
}

}  // namespace polar
