// Bad input never crashes and never yields a half-working tokenizer: a
// malformed or unsupported tokenizer.json / tokenizer_config.json, or a GGUF
// with missing or wrong tokenizer keys, gives a Status naming the file and the
// field. Each case starts from a valid file (loaded successfully first) and
// breaks one thing.
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/model/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer/golden_util.h"

namespace polar {
namespace {

using ::polar::testing::ReadFileOrDie;
using ::polar::testing::TokenizerDataPath;
using Json = nlohmann::json;

const Json& TinyJson() {
  static const Json* j = new Json(Json::parse(ReadFileOrDie(TokenizerDataPath("tiny_llama3.json"))));
  return *j;
}

absl::Status LoadJson(const Json& j, const std::string& config = "") {
  return Tokenizer::FromTokenizerJson(j.dump(), "broken.json", config).status();
}

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find("broken"), absl::string_view::npos) << "error does not name the file: " << s;
  EXPECT_NE(s.message().find(needle), absl::string_view::npos) << "error does not mention '" << needle << "': " << s;
}

struct JsonCase {
  std::string name;
  std::function<void(Json&)> mutate;
  absl::StatusCode code;
  std::string needle;
};

TEST(TokenizerJsonErrors, ValidFileLoads) { EXPECT_TRUE(LoadJson(TinyJson()).ok()); }

TEST(TokenizerJsonErrors, EachBreakageIsReported) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto kUnimplemented = absl::StatusCode::kUnimplemented;
  const std::vector<JsonCase> cases = {
      {"root not an object", [](Json& j) { j = Json::array({1, 2}); }, kInvalid, "root"},
      {"no model", [](Json& j) { j.erase("model"); }, kInvalid, "model"},
      {"WordPiece", [](Json& j) { j["model"]["type"] = "WordPiece"; }, kUnimplemented, "model.type"},
      {"byte fallback", [](Json& j) { j["model"]["byte_fallback"] = true; }, kUnimplemented, "byte_fallback"},
      {"subword prefix", [](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, kUnimplemented, "prefix"},
      {"vocab not object", [](Json& j) { j["model"]["vocab"] = 3; }, kInvalid, "model.vocab"},
      {"id is a string", [](Json& j) { j["model"]["vocab"]["a"] = "seven"; }, kInvalid, "integer"},
      {"negative id", [](Json& j) { j["model"]["vocab"]["a"] = -1; }, kInvalid, "out of range"},
      {"huge id", [](Json& j) { j["model"]["vocab"]["a"] = 4000000000LL; }, kInvalid, "out of range"},
      {"duplicate id", [](Json& j) { j["model"]["vocab"]["zzz_new"] = j["model"]["vocab"]["a"]; }, kInvalid,
       "used twice"},
      {"no merges", [](Json& j) { j["model"].erase("merges"); }, kInvalid, "model.merges"},
      {"merge not a pair", [](Json& j) { j["model"]["merges"][0] = 12; }, kInvalid, "model.merges[0]"},
      {"merge without space", [](Json& j) { j["model"]["merges"][0] = "abc"; }, kInvalid, "model.merges[0]"},
      {"merge of unknown tokens", [](Json& j) { j["model"]["merges"][3] = Json::array({"\xC3\xA9\xC3\xA9", "q"}); },
       kInvalid, "merge 3"},
      {"unk not in vocab", [](Json& j) { j["model"]["unk_token"] = "<nope>"; }, kInvalid, "unk_token"},
      {"added token without content", [](Json& j) { j["added_tokens"][0].erase("content"); }, kInvalid,
       "added_tokens[0]"},
      {"no pre-tokenizer", [](Json& j) { j["pre_tokenizer"] = nullptr; }, kUnimplemented, "pre_tokenizer"},
      {"metaspace", [](Json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, kUnimplemented, "Metaspace"},
      {"unknown regex", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; },
       kUnimplemented, "\\w+"},
      {"split merged behavior",
       [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious"; }, kUnimplemented,
       "behavior"},
      {"no byte level", [](Json& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); }, kUnimplemented, "ByteLevel"},
      {"step after byte level",
       [](Json& j) { j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}}); }, kUnimplemented,
       "after ByteLevel"},
      {"lowercase normalizer", [](Json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, kUnimplemented,
       "Lowercase"},
      {"roberta post-processor", [](Json& j) { j["post_processor"] = {{"type", "RobertaProcessing"}}; },
       kUnimplemented, "RobertaProcessing"},
      {"template with unknown token",
       [](Json& j) { j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<missing>"; }, kInvalid,
       "<missing>"},
      {"metaspace decoder", [](Json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, kUnimplemented, "decoder"},
      {"bool as string", [](Json& j) { j["model"]["ignore_merges"] = "yes"; }, kInvalid, "ignore_merges"},
  };
  for (const JsonCase& c : cases) {
    SCOPED_TRACE(c.name);
    Json j = TinyJson();
    c.mutate(j);
    ExpectError(LoadJson(j), c.code, c.needle);
  }
}

TEST(TokenizerJsonErrors, NotJsonAtAll) {
  for (const std::string text : {"", "{", "[1,2", "null", "\xFF\xFE", "{\"model\": {\"vocab\": {\"a\": 0}}"}) {
    const absl::Status s = Tokenizer::FromTokenizerJson(text, "broken.json").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(TokenizerJsonErrors, BadTokenizerConfig) {
  ExpectError(LoadJson(TinyJson(), "{not json"), absl::StatusCode::kInvalidArgument, "tokenizer_config");
  ExpectError(LoadJson(TinyJson(), R"({"bos_token": "<not-a-token>"})"), absl::StatusCode::kInvalidArgument,
              "bos_token");
  ExpectError(LoadJson(TinyJson(), R"({"eos_token": 5})"), absl::StatusCode::kInvalidArgument, "eos_token");
  ExpectError(LoadJson(TinyJson(), R"({"chat_template": 1})"), absl::StatusCode::kInvalidArgument, "chat_template");
  EXPECT_TRUE(LoadJson(TinyJson(), R"({"eos_token": {"content": "<|eot_id|>"}, "add_bos_token": false})").ok());
}

// --- GGUF -------------------------------------------------------------------

// Writes a tensor-less GGUF v3 holding only metadata.
class GgufWriter {
 public:
  void String(const std::string& key, const std::string& value) {
    Key(key, 8);
    Str(value);
  }
  void U32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Put(value);
  }
  void Bool(const std::string& key, bool value) {
    Key(key, 7);
    bytes_.push_back(value ? 1 : 0);
  }
  void Strings(const std::string& key, const std::vector<std::string>& values) {
    Key(key, 9);
    Put(uint32_t{8});
    Put(uint64_t{values.size()});
    for (const auto& v : values) Str(v);
  }
  void I32s(const std::string& key, const std::vector<int32_t>& values) {
    Key(key, 9);
    Put(uint32_t{5});
    Put(uint64_t{values.size()});
    for (int32_t v : values) Put(v);
  }
  std::string Finish() const {
    std::string out = "GGUF";
    auto put = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    put(uint32_t{3});
    put(uint64_t{0});  // tensors
    put(uint64_t{n_kv_});
    out += bytes_;
    while (out.size() % 32 != 0) out.push_back('\0');
    return out;
  }

 private:
  template <typename T>
  void Put(T v) {
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void Str(const std::string& s) {
    Put(uint64_t{s.size()});
    bytes_ += s;
  }
  void Key(const std::string& key, uint32_t type) {
    Str(key);
    Put(type);
    ++n_kv_;
  }
  std::string bytes_;
  uint64_t n_kv_ = 0;
};

// The keys of a valid byte-level vocabulary (the tiny one), with hooks to
// drop or replace one key.
struct GgufSpec {
  std::string skip;
  std::function<void(GgufWriter&)> extra;
};

std::string MakeGguf(const GgufSpec& spec) {
  absl::StatusOr<TokenizerData> data =
      TokenizerDataFromJson(ReadFileOrDie(TokenizerDataPath("tiny_gpt2.json")), "tiny_gpt2.json");
  EXPECT_TRUE(data.ok()) << data.status();
  GgufWriter w;
  w.String("general.architecture", "llama");
  if (spec.skip != "tokenizer.ggml.model") w.String("tokenizer.ggml.model", "gpt2");
  if (spec.skip != "tokenizer.ggml.pre") w.String("tokenizer.ggml.pre", "gpt-2");
  if (spec.skip != "tokenizer.ggml.tokens") w.Strings("tokenizer.ggml.tokens", data->tokens);
  if (spec.skip != "tokenizer.ggml.token_type") {
    std::vector<int32_t> types;
    for (TokenType t : data->types) types.push_back(static_cast<int32_t>(t));
    w.I32s("tokenizer.ggml.token_type", types);
  }
  if (spec.skip != "tokenizer.ggml.merges") {
    std::vector<std::string> merges;
    for (const auto& [a, b] : data->merges) merges.push_back(a + " " + b);
    w.Strings("tokenizer.ggml.merges", merges);
  }
  if (spec.skip != "tokenizer.ggml.eos_token_id") w.U32("tokenizer.ggml.eos_token_id", 1);
  if (spec.extra) spec.extra(w);
  return w.Finish();
}

absl::Status LoadGguf(const std::string& bytes) {
  auto gguf = GgufFile::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                                   "broken.gguf");
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf).status();
}

TEST(TokenizerGgufErrors, ValidFileLoads) {
  const std::string bytes = MakeGguf({});
  EXPECT_TRUE(LoadGguf(bytes).ok()) << LoadGguf(bytes);
}

TEST(TokenizerGgufErrors, MissingKeys) {
  for (const char* key : {"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"}) {
    ExpectError(LoadGguf(MakeGguf({key, nullptr})), absl::StatusCode::kNotFound, key);
  }
  // Optional keys: token types default to normal, pre to llama.cpp's default.
  EXPECT_TRUE(LoadGguf(MakeGguf({"tokenizer.ggml.token_type", nullptr})).ok());
  EXPECT_TRUE(LoadGguf(MakeGguf({"tokenizer.ggml.pre", nullptr})).ok());
}

TEST(TokenizerGgufErrors, WrongValues) {
  struct Case {
    std::string skip;
    std::function<void(GgufWriter&)> extra;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"tokenizer.ggml.model", [](GgufWriter& w) { w.String("tokenizer.ggml.model", "llama"); },
       absl::StatusCode::kUnimplemented, "'llama'"},
      {"tokenizer.ggml.pre", [](GgufWriter& w) { w.String("tokenizer.ggml.pre", "martian"); },
       absl::StatusCode::kUnimplemented, "martian"},
      {"tokenizer.ggml.tokens", [](GgufWriter& w) { w.U32("tokenizer.ggml.tokens", 3); },
       absl::StatusCode::kInvalidArgument, "tokenizer.ggml.tokens"},
      {"tokenizer.ggml.tokens", [](GgufWriter& w) { w.Strings("tokenizer.ggml.tokens", {}); },
       absl::StatusCode::kInvalidArgument, "tokenizer.ggml.tokens"},
      {"tokenizer.ggml.token_type", [](GgufWriter& w) { w.I32s("tokenizer.ggml.token_type", {1, 1, 1}); },
       absl::StatusCode::kInvalidArgument, "token_type"},
      {"tokenizer.ggml.merges", [](GgufWriter& w) { w.Strings("tokenizer.ggml.merges", {"nospace"}); },
       absl::StatusCode::kInvalidArgument, "merges[0]"},
      {"tokenizer.ggml.merges", [](GgufWriter& w) { w.Strings("tokenizer.ggml.merges", {"\xC3\xA9 zzz"}); },
       absl::StatusCode::kInvalidArgument, "merge 0"},
      {"tokenizer.ggml.eos_token_id", [](GgufWriter& w) { w.U32("tokenizer.ggml.eos_token_id", 1u << 30); },
       absl::StatusCode::kInvalidArgument, "eos_token_id"},
      {"tokenizer.ggml.eos_token_id", [](GgufWriter& w) { w.String("tokenizer.ggml.eos_token_id", "1"); },
       absl::StatusCode::kInvalidArgument, "eos_token_id"},
      {"", [](GgufWriter& w) { w.U32("tokenizer.ggml.add_bos_token", 1); }, absl::StatusCode::kInvalidArgument,
       "add_bos_token"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    ExpectError(LoadGguf(MakeGguf({c.skip, c.extra})), c.code, c.needle);
  }
}

}  // namespace
}  // namespace polar
