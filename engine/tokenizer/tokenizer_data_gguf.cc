// TokenizerData from GGUF metadata (llama.cpp's tokenizer.* keys). The
// pre-tokenizer and the per-type defaults (LLaMA 3 adds BOS and ignores merges
// for whole-word hits) follow llama.cpp's llama-vocab.cpp, so a GGUF tokenizes
// here exactly as it does there. Differences, on purpose: GPT-2's legacy
// default BOS/EOS id 11 is not assumed when the keys are missing, and special
// ids outside the vocabulary are an error rather than a warning.
#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/gguf_file.h"
#include "engine/tokenizer/tokenizer_data.h"

namespace polar {
namespace {

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct PreTokenizerFamily {
  std::initializer_list<std::string_view> names;
  std::initializer_list<PreTokenizerStage> stages;
  bool ignore_merges;
  bool add_bos;  // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
};

// tokenizer.ggml.pre values, grouped by the regexes llama.cpp gives them.
const PreTokenizerFamily kFamilies[] = {
    {{"llama3", "llama-v3", "llama-bpe", "falcon3"}, {PreTokenizerStage::kLlama3}, true, true},
    {{"dbrx", "smaug-bpe"}, {PreTokenizerStage::kLlama3}, false, false},
    {{"qwen2", "stablelm2", "deepseek-r1-qwen"}, {PreTokenizerStage::kQwen2}, false, false},
    {{"gpt-2", "gpt2", "mpt", "olmo", "jais"}, {PreTokenizerStage::kGpt2}, false, false},
    {{"smollm", "starcoder", "refact", "command-r", "codeshell"},
     {PreTokenizerStage::kIsolateDigits, PreTokenizerStage::kGpt2},
     false,
     false},
    {{"", "default"},
     {PreTokenizerStage::kIsolatePunctuationRuns, PreTokenizerStage::kGpt2, PreTokenizerStage::kIsolateNumberRuns,
      PreTokenizerStage::kIsolateAsciiDigitTriples},
     false,
     false},
};

// An optional special-token id: absent is fine, present must be a valid id.
absl::Status ReadTokenId(const GgufFile& gguf, std::string_view key, size_t n_tokens, int32_t* id) {
  if (!gguf.Has(key)) return absl::OkStatus();
  absl::StatusOr<int64_t> value = gguf.GetInt(key);
  if (!value.ok()) return value.status();
  if (*value < 0 || static_cast<uint64_t>(*value) >= n_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(gguf.source(), ": metadata key '", Sv(key), "' = ", *value,
                                                   " is not a token id (vocabulary has ", n_tokens, " tokens)"));
  }
  *id = static_cast<int32_t>(*value);
  return absl::OkStatus();
}

absl::Status ReadBool(const GgufFile& gguf, std::string_view key, bool* out) {
  if (!gguf.Has(key)) return absl::OkStatus();
  absl::StatusOr<bool> value = gguf.GetBool(key);
  if (!value.ok()) return value.status();
  *out = *value;
  return absl::OkStatus();
}

}  // namespace

absl::Status SetGgufPreTokenizer(std::string_view pre, TokenizerData* data) {
  for (const PreTokenizerFamily& family : kFamilies) {
    if (std::find(family.names.begin(), family.names.end(), pre) == family.names.end()) continue;
    data->pre_tokenizer.assign(family.stages.begin(), family.stages.end());
    data->pre_tokenizer_name = pre.empty() ? "default" : std::string(pre);
    data->ignore_merges = family.ignore_merges;
    data->add_bos = family.add_bos;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat(data->source, ": tokenizer.ggml.pre '", Sv(pre),
                   "' is not supported (supported: llama-bpe/llama3, qwen2, gpt-2, smollm/starcoder, default)"));
}

absl::StatusOr<TokenizerData> TokenizerDataFromGguf(const GgufFile& gguf) {
  TokenizerData data;
  data.source = gguf.source();

  absl::StatusOr<std::string> model = gguf.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  if (*model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(data.source, ": tokenizer.ggml.model is '", *model,
                                                 "'; only byte-level BPE ('gpt2') is supported"));
  }

  absl::StatusOr<std::vector<std::string>> tokens = gguf.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  if (tokens->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": tokenizer.ggml.tokens is empty"));
  }
  if (tokens->size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": tokenizer.ggml.tokens is too large"));
  }
  data.tokens = std::move(*tokens);
  const size_t n = data.tokens.size();

  data.types.assign(n, TokenType::kNormal);
  if (gguf.Has("tokenizer.ggml.token_type")) {
    absl::StatusOr<std::vector<int64_t>> types = gguf.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    if (types->size() < n) {
      return absl::InvalidArgumentError(absl::StrCat(data.source, ": tokenizer.ggml.token_type has ", types->size(),
                                                     " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = (*types)[i];
      // Unknown values are treated like llama.cpp does: undefined (never
      // matched in text, decoded as nothing).
      data.types[i] = (t >= 0 && t <= 6) ? static_cast<TokenType>(t) : TokenType::kUndefined;
    }
  }

  absl::StatusOr<std::vector<std::string>> merges = gguf.GetStringArray("tokenizer.ggml.merges");
  if (!merges.ok()) return merges.status();
  data.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string& merge = (*merges)[i];
    // Like llama.cpp, split at the first space after the first byte, so a
    // first part that is itself a space is still possible.
    const size_t space = merge.find(' ', 1);
    if (merge.empty() || space == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(data.source, ": tokenizer.ggml.merges[", i, "] = '", merge, "' is not 'left right'"));
    }
    data.merges.emplace_back(merge.substr(0, space), merge.substr(space + 1));
  }

  std::string pre;
  if (gguf.Has("tokenizer.ggml.pre")) {
    absl::StatusOr<std::string> value = gguf.GetString("tokenizer.ggml.pre");
    if (!value.ok()) return value.status();
    pre = std::move(*value);
  }
  if (absl::Status s = SetGgufPreTokenizer(pre, &data); !s.ok()) return s;

  const std::pair<std::string_view, int32_t*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &data.bos_id},     {"tokenizer.ggml.eos_token_id", &data.eos_id},
      {"tokenizer.ggml.unknown_token_id", &data.unk_id}, {"tokenizer.ggml.padding_token_id", &data.pad_id},
      {"tokenizer.ggml.eot_token_id", &data.eot_id},     {"tokenizer.ggml.eom_token_id", &data.eom_id},
      {"tokenizer.ggml.fim_pad_token_id", &data.fim_pad_id}, {"tokenizer.ggml.fim_rep_token_id", &data.fim_rep_id},
      {"tokenizer.ggml.fim_sep_token_id", &data.fim_sep_id},
  };
  for (const auto& [key, id] : ids) {
    if (absl::Status s = ReadTokenId(gguf, key, n, id); !s.ok()) return s;
  }
  if (absl::Status s = ReadBool(gguf, "tokenizer.ggml.add_bos_token", &data.add_bos); !s.ok()) return s;
  if (absl::Status s = ReadBool(gguf, "tokenizer.ggml.add_eos_token", &data.add_eos); !s.ok()) return s;

  if (gguf.Has("tokenizer.chat_template")) {
    absl::StatusOr<std::string> tmpl = gguf.GetString("tokenizer.chat_template");
    if (!tmpl.ok()) return tmpl.status();
    data.chat_template = std::move(*tmpl);
  }
  return data;
}

}  // namespace polar
