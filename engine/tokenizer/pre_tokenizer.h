// Pre-tokenization: splitting text into the "words" that BPE merges never
// cross. Models define it with a regex over Unicode classes (\p{L}, \p{N},
// \s, look-ahead), which std::regex cannot express, so each pattern a
// supported model uses is a hand-written matcher over code points with the
// exact semantics of the regex (ordered alternation, greedy runs,
// backtracking of \s+(?!\S) and \s*[\r\n]+). A pre-tokenizer is a list of
// stages; each stage splits every piece the previous stage produced, and a
// piece's end is the end of text for the next stage's look-ahead (this is how
// both llama.cpp and Hugging Face tokenizers chain their splits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace polar {

enum class PreTokenizerStage : uint8_t {
  // Every \p{N} code point becomes its own piece (HF Digits(individual_digits)).
  kIsolateDigits,
  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // LLaMA 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  //          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // Qwen2: as kLlama3 with \p{N} (one digit per piece) instead of \p{N}{1,3}.
  kQwen2,
  // llama.cpp's fallback for GGUFs without tokenizer.ggml.pre ("default"):
  // [\p{P}\$\+<=>\^~\|]+, then kGpt2, then \p{N}+, then [0-9][0-9][0-9],
  // each isolating its matches.
  kIsolatePunctuationRuns,
  kIsolateNumberRuns,
  kIsolateAsciiDigitTriples,
};

std::string_view PreTokenizerStageName(PreTokenizerStage stage);

// Splits `cps` into pieces [begin, end) that cover it in order, none empty.
// `classes` holds ClassifyCodepoint() of each code point (same length).
void PreTokenize(std::span<const PreTokenizerStage> stages, std::span<const uint32_t> cps,
                 std::span<const uint8_t> classes, std::vector<std::pair<size_t, size_t>>* pieces);

}  // namespace polar
