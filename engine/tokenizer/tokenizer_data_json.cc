// TokenizerData from a Hugging Face tokenizer.json (the `tokenizers` library's
// serialization) plus, optionally, tokenizer_config.json. Only what a
// byte-level BPE needs is accepted; anything that would change the result and
// is not implemented (another model type, byte fallback, an unknown
// normalizer, regex or post-processor) is an Unimplemented error naming the
// field, never silently ignored. Accepted but ignored: BPE dropout (training
// only), added tokens' single_word / normalized flags, decoder options.
//
// The file is untrusted input: it is parsed without exceptions and every
// field's type is checked before use.
#include <algorithm>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/tokenizer_data.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using Json = nlohmann::json;

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Ids above this are rejected so a hostile file cannot make us allocate
// gigabytes for one huge id (real vocabularies have < 300k tokens).
constexpr int64_t kMaxVocabSize = 1 << 22;

// The regexes (as written in tokenizer.json) that map to a hand-written stage.
struct KnownRegex {
  std::string_view pattern;
  PreTokenizerStage stage;
};
const KnownRegex kKnownRegexes[] = {
    {R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", PreTokenizerStage::kGpt2},
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     PreTokenizerStage::kLlama3},
    {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     PreTokenizerStage::kLlama3},
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     PreTokenizerStage::kQwen2},
    {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     PreTokenizerStage::kQwen2},
};

// Error helpers that name the file and the JSON path.
class Errors {
 public:
  explicit Errors(std::string_view source) : source_(source) {}
  absl::Status Invalid(std::string_view path, std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(Sv(source_), ": ", Sv(path), ": ", Sv(what)));
  }
  absl::Status Unsupported(std::string_view path, std::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(Sv(source_), ": ", Sv(path), ": ", Sv(what)));
  }

 private:
  std::string_view source_;
};

const Json* Field(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

bool IsNull(const Json* value) { return value == nullptr || value->is_null(); }

// Optional bool field: absent/null keeps `*out`.
absl::Status OptionalBool(const Json& object, const char* key, std::string_view path, const Errors& err, bool* out) {
  const Json* v = Field(object, key);
  if (IsNull(v)) return absl::OkStatus();
  if (!v->is_boolean()) return err.Invalid(absl::StrCat(Sv(path), ".", key), "expected a bool");
  *out = v->get<bool>();
  return absl::OkStatus();
}

std::string TypeOf(const Json& object) {
  const Json* t = Field(object, "type");
  return (t != nullptr && t->is_string()) ? t->get<std::string>() : std::string();
}

// Appends the stages of one pre-tokenizer node; `byte_level_seen` is set by
// the ByteLevel step, which must come last.
absl::Status ParsePreTokenizer(const Json& node, std::string_view path, const Errors& err, TokenizerData* data,
                               bool* byte_level_seen) {
  if (!node.is_object()) return err.Invalid(path, "expected an object");
  if (*byte_level_seen) return err.Unsupported(path, "a pre-tokenizer after ByteLevel");
  const std::string type = TypeOf(node);
  if (type == "Sequence") {
    const Json* list = Field(node, "pretokenizers");
    if (list == nullptr || !list->is_array()) return err.Invalid(path, "Sequence without a pretokenizers array");
    for (size_t i = 0; i < list->size(); ++i) {
      if (absl::Status s = ParsePreTokenizer((*list)[i], absl::StrCat(Sv(path), ".pretokenizers[", i, "]"), err, data,
                                             byte_level_seen);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    bool use_regex = true;
    if (absl::Status s = OptionalBool(node, "use_regex", path, err, &use_regex); !s.ok()) return s;
    if (absl::Status s = OptionalBool(node, "add_prefix_space", path, err, &data->add_prefix_space); !s.ok()) return s;
    if (use_regex) data->pre_tokenizer.push_back(PreTokenizerStage::kGpt2);
    *byte_level_seen = true;
    return absl::OkStatus();
  }
  if (type == "Digits") {
    bool individual = false;
    if (absl::Status s = OptionalBool(node, "individual_digits", path, err, &individual); !s.ok()) return s;
    data->pre_tokenizer.push_back(individual ? PreTokenizerStage::kIsolateDigits
                                             : PreTokenizerStage::kIsolateNumberRuns);
    return absl::OkStatus();
  }
  if (type == "Split") {
    const Json* pattern = Field(node, "pattern");
    const Json* regex = pattern == nullptr ? nullptr : Field(*pattern, "Regex");
    if (regex == nullptr || !regex->is_string()) return err.Unsupported(path, "Split without a Regex pattern");
    const Json* behavior = Field(node, "behavior");
    if (behavior == nullptr || !behavior->is_string() || behavior->get<std::string>() != "Isolated") {
      return err.Unsupported(path, "Split behavior other than Isolated");
    }
    bool invert = false;
    if (absl::Status s = OptionalBool(node, "invert", path, err, &invert); !s.ok()) return s;
    if (invert) return err.Unsupported(path, "inverted Split");
    const std::string& text = regex->get_ref<const std::string&>();
    for (const KnownRegex& known : kKnownRegexes) {
      if (text == known.pattern) {
        data->pre_tokenizer.push_back(known.stage);
        return absl::OkStatus();
      }
    }
    return err.Unsupported(path, absl::StrCat("Split regex not implemented: ", text));
  }
  return err.Unsupported(path, absl::StrCat("pre-tokenizer type '", type, "'"));
}

// Name of the token a TemplateProcessing item inserts, or "" for $A/$B.
absl::Status TemplateItemToken(const Json& item, std::string_view path, const Errors& err, std::string* token) {
  token->clear();
  if (Field(item, "Sequence") != nullptr) return absl::OkStatus();
  const Json* special = Field(item, "SpecialToken");
  const Json* id = special == nullptr ? nullptr : Field(*special, "id");
  if (id == nullptr || !id->is_string()) return err.Invalid(path, "expected Sequence or SpecialToken");
  *token = id->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<int32_t> LookupToken(const absl::flat_hash_map<std::string, int32_t>& ids, const std::string& text,
                                    std::string_view path, const Errors& err) {
  const auto it = ids.find(text);
  if (it == ids.end()) return err.Invalid(path, absl::StrCat("token '", text, "' is not in the vocabulary"));
  return it->second;
}

absl::Status ParsePostProcessor(const Json& node, std::string_view path, const Errors& err,
                                const absl::flat_hash_map<std::string, int32_t>& ids, TokenizerData* data) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(node);
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    const Json* list = Field(node, "processors");
    if (list == nullptr || !list->is_array()) return err.Invalid(path, "Sequence without a processors array");
    for (size_t i = 0; i < list->size(); ++i) {
      if (absl::Status s = ParsePostProcessor((*list)[i], absl::StrCat(Sv(path), ".processors[", i, "]"), err, ids, data);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") return err.Unsupported(path, absl::StrCat("post-processor type '", type, "'"));
  const Json* single = Field(node, "single");
  if (single == nullptr || !single->is_array()) return err.Invalid(path, "TemplateProcessing without 'single'");
  std::vector<std::string> before, after;
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    std::string token;
    if (absl::Status s = TemplateItemToken((*single)[i], absl::StrCat(Sv(path), ".single[", i, "]"), err, &token);
        !s.ok()) {
      return s;
    }
    if (token.empty()) {
      seen_sequence = true;
    } else {
      (seen_sequence ? after : before).push_back(std::move(token));
    }
  }
  if (before.size() > 1 || after.size() > 1) {
    return err.Unsupported(path, "more than one special token before or after the text");
  }
  if (!before.empty()) {
    absl::StatusOr<int32_t> id = LookupToken(ids, before[0], path, err);
    if (!id.ok()) return id.status();
    data->bos_id = *id;
    data->add_bos = true;
  }
  if (!after.empty()) {
    absl::StatusOr<int32_t> id = LookupToken(ids, after[0], path, err);
    if (!id.ok()) return id.status();
    data->eos_id = *id;
    data->add_eos = true;
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizer(const Json& node, std::string_view path, const Errors& err, TokenizerData* data) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(node);
  if (type == "NFC") {
    data->normalize_nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    const Json* list = Field(node, "normalizers");
    if (list == nullptr || !list->is_array()) return err.Invalid(path, "Sequence without a normalizers array");
    for (size_t i = 0; i < list->size(); ++i) {
      if (absl::Status s = ParseNormalizer((*list)[i], absl::StrCat(Sv(path), ".normalizers[", i, "]"), err, data);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  return err.Unsupported(path, absl::StrCat("normalizer type '", type, "'"));
}

absl::Status ParseDecoder(const Json& node, std::string_view path, const Errors& err) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(node);
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    const Json* list = Field(node, "decoders");
    if (list == nullptr || !list->is_array()) return err.Invalid(path, "Sequence without a decoders array");
    for (size_t i = 0; i < list->size(); ++i) {
      if (absl::Status s = ParseDecoder((*list)[i], absl::StrCat(Sv(path), ".decoders[", i, "]"), err); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  return err.Unsupported(path, absl::StrCat("decoder type '", type, "' (only ByteLevel decodes byte-level BPE)"));
}

absl::StatusOr<int64_t> TokenIdValue(const Json& v, std::string_view path, const Errors& err) {
  if (!v.is_number_integer()) return err.Invalid(path, "expected an integer token id");
  const int64_t id = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
                                            : v.get<int64_t>();
  if (id < 0 || id >= kMaxVocabSize) return err.Invalid(path, absl::StrCat("token id ", id, " out of range"));
  return id;
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken
// object with "content", or null.
absl::Status ConfigToken(const Json& config, const char* key, const Errors& err,
                         const absl::flat_hash_map<std::string, int32_t>& ids, int32_t* out) {
  const Json* v = Field(config, key);
  if (IsNull(v)) return absl::OkStatus();
  const Json* content = v->is_object() ? Field(*v, "content") : v;
  if (content == nullptr || !content->is_string()) {
    return err.Invalid(absl::StrCat("tokenizer_config.", key), "expected a string or {content: string}");
  }
  absl::StatusOr<int32_t> id = LookupToken(ids, content->get<std::string>(), absl::StrCat("tokenizer_config.", key), err);
  if (!id.ok()) return id.status();
  *out = *id;
  return absl::OkStatus();
}

absl::Status ParseConfig(std::string_view text, const Errors& err, const absl::flat_hash_map<std::string, int32_t>& ids,
                         TokenizerData* data) {
  const Json config = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return err.Invalid("tokenizer_config", "not a JSON object");
  if (absl::Status s = ConfigToken(config, "bos_token", err, ids, &data->bos_id); !s.ok()) return s;
  if (absl::Status s = ConfigToken(config, "eos_token", err, ids, &data->eos_id); !s.ok()) return s;
  if (absl::Status s = ConfigToken(config, "unk_token", err, ids, &data->unk_id); !s.ok()) return s;
  if (absl::Status s = ConfigToken(config, "pad_token", err, ids, &data->pad_id); !s.ok()) return s;
  if (absl::Status s = OptionalBool(config, "add_bos_token", "tokenizer_config", err, &data->add_bos); !s.ok()) return s;
  if (absl::Status s = OptionalBool(config, "add_eos_token", "tokenizer_config", err, &data->add_eos); !s.ok()) return s;
  const Json* tmpl = Field(config, "chat_template");
  if (IsNull(tmpl)) return absl::OkStatus();
  if (tmpl->is_string()) {
    data->chat_template = tmpl->get<std::string>();
    return absl::OkStatus();
  }
  // A list of named templates: use "default".
  if (tmpl->is_array()) {
    for (const Json& entry : *tmpl) {
      const Json* name = Field(entry, "name");
      const Json* body = Field(entry, "template");
      if (name != nullptr && name->is_string() && body != nullptr && body->is_string() &&
          name->get<std::string>() == "default") {
        data->chat_template = body->get<std::string>();
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }
  return err.Invalid("tokenizer_config.chat_template", "expected a string or a list of {name, template}");
}

absl::StatusOr<TokenizerData> Parse(const Json& root, std::string_view config_text, const Errors& err,
                                    TokenizerData data) {
  if (!root.is_object()) return err.Invalid("(root)", "not a JSON object");
  const Json* model = Field(root, "model");
  if (model == nullptr || !model->is_object()) return err.Invalid("model", "missing or not an object");
  const Json* model_type = Field(*model, "type");
  if (!IsNull(model_type) && (!model_type->is_string() || model_type->get<std::string>() != "BPE")) {
    return err.Unsupported("model.type", "only BPE models are supported");
  }
  bool byte_fallback = false;
  if (absl::Status s = OptionalBool(*model, "byte_fallback", "model", err, &byte_fallback); !s.ok()) return s;
  if (byte_fallback) return err.Unsupported("model.byte_fallback", "byte fallback (SentencePiece-style BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* v = Field(*model, key);
    if (!IsNull(v) && (!v->is_string() || !v->get_ref<const std::string&>().empty())) {
      return err.Unsupported(absl::StrCat("model.", key), "subword prefixes/suffixes");
    }
  }
  if (absl::Status s = OptionalBool(*model, "ignore_merges", "model", err, &data.ignore_merges); !s.ok()) return s;

  // Vocabulary and added tokens, by id.
  const Json* vocab = Field(*model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return err.Invalid("model.vocab", "missing or not an object");
  std::vector<std::pair<int64_t, std::string>> entries;
  entries.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    absl::StatusOr<int64_t> id = TokenIdValue(it.value(), absl::StrCat("model.vocab[\"", it.key(), "\"]"), err);
    if (!id.ok()) return id.status();
    entries.emplace_back(*id, it.key());
  }
  int64_t size = 0;
  for (const auto& e : entries) size = std::max(size, e.first + 1);
  struct Added {
    int64_t id;
    std::string content;
    bool special, lstrip, rstrip;
  };
  std::vector<Added> added;
  if (const Json* list = Field(root, "added_tokens"); !IsNull(list)) {
    if (!list->is_array()) return err.Invalid("added_tokens", "expected an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const Json& t = (*list)[i];
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      const Json* id = Field(t, "id");
      const Json* content = Field(t, "content");
      if (id == nullptr || content == nullptr || !content->is_string() || content->get_ref<const std::string&>().empty()) {
        return err.Invalid(path, "needs an id and a non-empty content string");
      }
      absl::StatusOr<int64_t> value = TokenIdValue(*id, path, err);
      if (!value.ok()) return value.status();
      Added a{*value, content->get<std::string>(), false, false, false};
      const std::pair<const char*, bool*> flags[] = {{"special", &a.special}, {"lstrip", &a.lstrip}, {"rstrip", &a.rstrip}};
      for (const auto& [key, flag] : flags) {
        if (absl::Status s = OptionalBool(t, key, path, err, flag); !s.ok()) return s;
      }
      size = std::max(size, a.id + 1);
      added.push_back(std::move(a));
    }
  }
  if (size == 0) return err.Invalid("model.vocab", "empty vocabulary");
  data.tokens.assign(size, std::string());
  data.types.assign(size, TokenType::kUndefined);  // ids without an entry stay undefined
  for (auto& [id, text] : entries) {
    if (data.types[id] != TokenType::kUndefined) {
      return err.Invalid("model.vocab", absl::StrCat("token id ", id, " is used twice"));
    }
    data.tokens[id] = std::move(text);
    data.types[id] = TokenType::kNormal;
  }
  for (Added& a : added) {
    // An added token may repeat a vocabulary entry (same id); its content wins.
    data.tokens[a.id] = std::move(a.content);
    data.types[a.id] = a.special ? TokenType::kControl : TokenType::kUserDefined;
    if (a.lstrip) data.lstrip_ids.push_back(static_cast<int32_t>(a.id));
    if (a.rstrip) data.rstrip_ids.push_back(static_cast<int32_t>(a.id));
  }
  absl::flat_hash_map<std::string, int32_t> ids;
  ids.reserve(data.tokens.size());
  for (size_t i = 0; i < data.tokens.size(); ++i) {
    if (data.types[i] != TokenType::kUndefined) ids[data.tokens[i]] = static_cast<int32_t>(i);
  }

  // Merges: "left right" strings (older files) or [left, right] pairs.
  const Json* merges = Field(*model, "merges");
  if (merges == nullptr || !merges->is_array()) return err.Invalid("model.merges", "missing or not an array");
  data.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& m = (*merges)[i];
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ', 1);
      if (s.empty() || space == std::string::npos) {
        return err.Invalid(absl::StrCat("model.merges[", i, "]"), "expected 'left right'");
      }
      data.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      data.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return err.Invalid(absl::StrCat("model.merges[", i, "]"), "expected a string or a pair of strings");
    }
  }
  if (const Json* unk = Field(*model, "unk_token"); !IsNull(unk)) {
    if (!unk->is_string()) return err.Invalid("model.unk_token", "expected a string");
    absl::StatusOr<int32_t> id = LookupToken(ids, unk->get<std::string>(), "model.unk_token", err);
    if (!id.ok()) return id.status();
    data.unk_id = *id;
    data.unk_for_unknown_bytes = true;
    if (absl::Status s = OptionalBool(*model, "fuse_unk", "model", err, &data.fuse_unk); !s.ok()) return s;
  }

  if (const Json* n = Field(root, "normalizer"); n != nullptr) {
    if (absl::Status s = ParseNormalizer(*n, "normalizer", err, &data); !s.ok()) return s;
  }
  const Json* pre = Field(root, "pre_tokenizer");
  if (IsNull(pre)) return err.Unsupported("pre_tokenizer", "missing; a byte-level BPE needs a ByteLevel pre-tokenizer");
  bool byte_level_seen = false;
  if (absl::Status s = ParsePreTokenizer(*pre, "pre_tokenizer", err, &data, &byte_level_seen); !s.ok()) return s;
  if (!byte_level_seen) return err.Unsupported("pre_tokenizer", "no ByteLevel step (not a byte-level BPE)");
  data.pre_tokenizer_name = pre->dump();
  if (const Json* post = Field(root, "post_processor"); post != nullptr) {
    if (absl::Status s = ParsePostProcessor(*post, "post_processor", err, ids, &data); !s.ok()) return s;
  }
  if (const Json* dec = Field(root, "decoder"); dec != nullptr) {
    if (absl::Status s = ParseDecoder(*dec, "decoder", err); !s.ok()) return s;
  }
  if (!config_text.empty()) {
    if (absl::Status s = ParseConfig(config_text, err, ids, &data); !s.ok()) return s;
  }
  return data;
}

}  // namespace

absl::StatusOr<TokenizerData> TokenizerDataFromJson(std::string_view tokenizer_json, std::string_view source,
                                                    std::string_view tokenizer_config_json) {
  const Errors err(source);
  TokenizerData data;
  data.source = std::string(source);
  const Json root = Json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return err.Invalid("(root)", "not valid JSON");
  // Every access above is type-checked; this only guards against a
  // nlohmann_json behaviour this code did not anticipate.
  try {
    return Parse(root, tokenizer_config_json, err, std::move(data));
  } catch (const nlohmann::json::exception& e) {
    return err.Invalid("(root)", e.what());
  }
}

}  // namespace polar
