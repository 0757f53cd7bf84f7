// Shared helpers for the tokenizer tests: reading tests/data/tokenizer/ and
// the goldens written by tests/reference/make_tokenizer_goldens.py.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "engine/model/gguf_file.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace polar::testing {

inline std::string TokenizerDataPath(std::string_view name) {
  return std::string(POLAR_TEST_DATA_DIR) + "/tokenizer/" + std::string(name);
}

inline std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string HexDecode(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

inline const nlohmann::json& Goldens() {
  static const nlohmann::json* goldens =
      new nlohmann::json(nlohmann::json::parse(ReadFileOrDie(TokenizerDataPath("goldens.json"))));
  return *goldens;
}

inline std::string GoldenText(size_t index) {
  return HexDecode(Goldens()["texts"][index]["hex"].get<std::string>());
}

// The GGUF a golden tokenizer entry names; the default model may be absent
// (tests then skip).
inline std::string GoldenGgufPath(const nlohmann::json& entry) {
  const std::string name = entry["gguf"].get<std::string>();
  return name == "POLAR_DEFAULT_MODEL" ? std::string(POLAR_DEFAULT_MODEL) : TokenizerDataPath(name);
}

inline std::unique_ptr<Tokenizer> LoadGgufTokenizer(const std::string& path) {
  auto gguf = GgufFile::Open(path);
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  auto tokenizer = Tokenizer::FromGguf(**gguf);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

inline std::unique_ptr<Tokenizer> LoadJsonTokenizer(const std::string& name, const std::string& config_name = "") {
  const std::string config = config_name.empty() ? "" : ReadFileOrDie(TokenizerDataPath(config_name));
  auto tokenizer = Tokenizer::FromTokenizerJson(ReadFileOrDie(TokenizerDataPath(name)), name, config);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

inline bool DefaultModelPresent() { return std::filesystem::exists(POLAR_DEFAULT_MODEL); }

}  // namespace polar::testing
