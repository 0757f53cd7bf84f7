// Byte-level BPE tokenizer (GPT-2 family: SmolLM, LLaMA 3, Qwen2, GPT-2),
// loaded from GGUF metadata or a Hugging Face tokenizer.json. Tokenization
// matches llama.cpp token for token (special-token splitting, pre-tokenizer
// regexes, merge order, invalid UTF-8 handling) and therefore HF tokenizers
// on valid text. The object is immutable after construction: Encode and
// Decode may be called from many threads at once.
//
// Encoding one text: split out special tokens written in the text (longest
// first, as llama.cpp does), pre-tokenize each remaining fragment into words
// (pre_tokenizer.h), spell each word's UTF-8 bytes with the byte-level
// alphabet (one symbol per byte), then repeatedly merge the adjacent pair with
// the lowest merge rank (leftmost first on ties) until no pair has a rank.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_data.h"

namespace polar {

class GgufFile;

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  // `tokenizer_config_json` (optional) adds bos/eos, add_bos_token and the
  // chat template, which tokenizer.json does not carry.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromTokenizerJson(const std::string& json_text,
                                                                      const std::string& source,
                                                                      const std::string& tokenizer_config_json = "");
  // Validates `data` (every merge part and result in the vocabulary, special
  // ids in range) and builds the tables.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromData(TokenizerData data);

  // add_special: add BOS (and EOS) where the vocabulary asks for it
  // (add_bos_token / add_eos_token), like llama.cpp's add_special.
  // parse_special: recognise control tokens written in the text (e.g.
  // "<|im_start|>") as single tokens; user-defined (non-special added) tokens
  // are always recognised. Never fails: invalid UTF-8 bytes are tokenized as
  // U+FFFD, as llama.cpp does; a byte the vocabulary has no symbol for is
  // dropped (or becomes unk, see TokenizerData::unk_for_unknown_bytes), as
  // llama.cpp and HF do.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // Concatenated bytes of the tokens (may be invalid UTF-8 when a multi-byte
  // character is split across the ends of `ids`). skip_special drops control
  // and unknown tokens. Ids outside the vocabulary contribute nothing.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The bytes one token decodes to ("" for ids outside the vocabulary).
  std::string_view TokenPiece(int32_t id) const;
  // The vocabulary string (byte-level spelled for normal tokens).
  std::string_view TokenText(int32_t id) const;
  std::optional<int32_t> TokenId(std::string_view text) const;
  TokenType token_type(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(data_.tokens.size()); }
  int32_t bos_id() const { return data_.bos_id; }  // -1 if none
  int32_t eos_id() const { return data_.eos_id; }  // -1 if none
  bool add_bos() const { return data_.add_bos; }
  // Every token that ends generation: eos, eot, eom, and the tokens llama.cpp
  // treats as end-of-generation by name (<|im_end|>, <|endoftext|>,
  // <|eot_id|>, ...) or as FIM pad/repo/separator. Sorted.
  const std::vector<int32_t>& eos_ids() const { return eog_ids_; }
  bool IsEndOfGeneration(int32_t id) const;
  // Control or unknown tokens (those Decode(skip_special) drops).
  bool IsSpecial(int32_t id) const;
  const std::string& chat_template() const { return data_.chat_template; }
  const TokenizerData& data() const { return data_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct Fragment {
    int32_t token;  // >= 0: a special token; -1: raw text [begin, end)
    size_t begin, end;
  };
  // Scratch space reused across the words of one Encode call.
  struct Scratch;

  explicit Tokenizer(TokenizerData data) : data_(std::move(data)) {}
  absl::Status Build();
  void SplitSpecial(std::string_view text, bool parse_special, std::vector<Fragment>* fragments) const;
  void EncodeFragment(std::string_view text, Scratch* scratch, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view bytes, Scratch* scratch, std::vector<int32_t>* out) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;

  TokenizerData data_;
  absl::flat_hash_map<std::string, int32_t> token_ids_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::vector<std::string> pieces_;              // id -> decoded bytes
  int32_t byte_tokens_[256] = {};                // byte -> its single-symbol token, or -1
  std::vector<int32_t> special_tokens_;          // matched in text; longest first
  std::vector<uint8_t> strip_;                   // id -> kStripLeft | kStripRight
  std::vector<int32_t> eog_ids_;
};

}  // namespace polar

// The rest of the public tokenizer API (streaming detokenizer, chat
// templates), so that including tokenizer.h is enough. Both headers include
// this one; by this point Tokenizer is complete, so any include order works.
#include "engine/tokenizer/chat_template.h"             // IWYU pragma: export
#include "engine/tokenizer/incremental_detokenizer.h"  // IWYU pragma: export
