// TokenizerData: everything a byte-level BPE tokenizer is made of, as plain
// values, filled from either a GGUF file's tokenizer.* metadata or a Hugging
// Face tokenizer.json (+ optional tokenizer_config.json). Tokenizer is built
// from it, so both sources share one implementation and one set of checks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace polar {

class GgufFile;

// GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : uint8_t {
  kUndefined = 0,
  kNormal = 1,       // a byte-level spelled vocabulary entry
  kUnknown = 2,      // <unk>
  kControl = 3,      // special: <|im_start|>, <|eot_id|> ... (HF added token, special)
  kUserDefined = 4,  // HF added token, not special: always matched as-is in text
  kUnused = 5,
  kByte = 6,  // a single byte (<0x0A> style); rare in byte-level vocabularies
};

struct TokenizerData {
  std::string source;  // file name, for errors

  std::vector<std::string> tokens;  // id -> vocabulary string (byte-level spelled for kNormal)
  std::vector<TokenType> types;     // same length as tokens
  // Merges in priority order (rank = index): the two parts, spelled like tokens.
  std::vector<std::pair<std::string, std::string>> merges;

  std::vector<PreTokenizerStage> pre_tokenizer;
  std::string pre_tokenizer_name;  // "smollm", "llama-bpe", or the tokenizer.json description
  // Take a whole pre-tokenized word as one token when the vocabulary has it,
  // without merging (LLaMA 3; HF's model.ignore_merges).
  bool ignore_merges = false;
  // HF ByteLevel(add_prefix_space): a space is prepended to text that does
  // not start with one. (llama.cpp ignores tokenizer.ggml.add_space_prefix
  // for BPE vocabularies, so GGUF never sets this.)
  bool add_prefix_space = false;
  bool normalize_nfc = false;  // HF normalizer NFC (Qwen2's tokenizer.json)
  // A byte with no single-symbol token becomes unk_id (HF BPE with an
  // unk_token; fuse_unk merges a run of them within a word) instead of being
  // dropped (llama.cpp, HF without unk_token).
  bool unk_for_unknown_bytes = false;
  bool fuse_unk = false;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  int32_t eot_id = -1;  // end of turn, GGUF tokenizer.ggml.eot_token_id
  int32_t eom_id = -1;  // end of message, GGUF tokenizer.ggml.eom_token_id
  // Fill-in-the-middle pad / repository / file separator tokens; when unset
  // they are found by name (llama.cpp treats them as end of generation).
  int32_t fim_pad_id = -1;
  int32_t fim_rep_id = -1;
  int32_t fim_sep_id = -1;
  bool add_bos = false;
  bool add_eos = false;

  // Added tokens that swallow the whitespace on their left / right when
  // matched in text (HF added_tokens lstrip / rstrip).
  std::vector<int32_t> lstrip_ids;
  std::vector<int32_t> rstrip_ids;

  std::string chat_template;  // Jinja source; may be empty
};

// tokenizer.ggml.* and tokenizer.chat_template of a GGUF file. The model must
// be "gpt2" (byte-level BPE); tokenizer.ggml.pre selects the pre-tokenizer.
absl::StatusOr<TokenizerData> TokenizerDataFromGguf(const GgufFile& gguf);

// A Hugging Face tokenizer.json with a BPE model and a byte-level
// pre-tokenizer. `tokenizer_config_json` (may be empty) supplies bos/eos
// tokens, add_bos_token/add_eos_token and chat_template, which tokenizer.json
// does not carry. `source` names the input in errors.
absl::StatusOr<TokenizerData> TokenizerDataFromJson(std::string_view tokenizer_json, std::string_view source,
                                                    std::string_view tokenizer_config_json = {});

// The pre-tokenizer stages for a GGUF tokenizer.ggml.pre value (empty
// string: llama.cpp's "default"); sets ignore_merges as llama.cpp does.
absl::Status SetGgufPreTokenizer(std::string_view pre, TokenizerData* data);

}  // namespace polar
