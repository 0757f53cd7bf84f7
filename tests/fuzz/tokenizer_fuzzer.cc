// libFuzzer target for the tokenizer. The first input byte picks a mode (its
// low 3 bits, modulo 6; bits 3 and 4 set add_special / skip_special), the
// rest is the payload:
//   0, 1  Encode the payload as text (parse_special on / off) with tokenizers
//         built once from the committed files (SmolLM2's vocabulary, the tiny
//         LLaMA-3 / Qwen2-NFC / GPT-2-prefix-space ones); check every id is in
//         the vocabulary, Decode(Encode(x)) is x with llama.cpp's U+FFFD
//         replacement (where no normalization applies), and streaming the ids
//         gives valid UTF-8 chunks that add up to the one-shot decode.
//   2     Decode the payload as raw int32 ids (any value), one-shot and
//         streaming.
//   3     Parse the payload as a tokenizer.json; if it loads, tokenize a
//         sample and the payload with it.
//   4     Parse the payload as a tokenizer_config.json next to a valid
//         tokenizer.json, and render the payload as a chat message with each
//         template family.
//   5     Read the payload as a GGUF file; if its tokenizer keys load,
//         tokenize a sample and the payload with it.
//
// Seeds: tests/fuzz/corpus/tokenizer. Run e.g.
//   build-fuzz/bin/tokenizer_fuzzer -runs=1000000 fuzz-corpus/tokenizer tests/fuzz/corpus/tokenizer
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/model/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_text.h"
#include "nlohmann/json.hpp"

namespace {

using polar::Tokenizer;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "tokenizer_fuzzer: %s\n", what.c_str());
  std::abort();
}

// tests/data/tokenizer, found from this file's path (fuzzers get no
// compile-time data directory).
std::string DataPath(const std::string& name) {
  std::string here = __FILE__;
  here.erase(here.rfind('/'));  // tests/fuzz
  return here + "/../data/tokenizer/" + name;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Fixture {
  std::vector<std::unique_ptr<Tokenizer>> tokenizers;
  std::vector<std::array<bool, 256>> spellable;  // per tokenizer: byte has a token
  std::string tiny_json;
};

std::array<bool, 256> SpellableBytes(const Tokenizer& tokenizer) {
  std::array<bool, 256> out{};
  for (int b = 0; b < 256; ++b) out[b] = tokenizer.TokenId(polar::tokenizer_internal::ByteCharsUtf8()[b]).has_value();
  return out;
}

const Fixture& GetFixture() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    for (const char* name : {"smollm2_tokenizer.json", "tiny_llama3.json", "tiny_qwen2.json", "tiny_gpt2.json"}) {
      auto t = Tokenizer::FromTokenizerJson(ReadFile(DataPath(name)), name);
      if (!t.ok()) Fail(std::string(t.status().message()));
      f->spellable.push_back(SpellableBytes(**t));
      f->tokenizers.push_back(std::move(*t));
    }
    f->tiny_json = ReadFile(DataPath("tiny_llama3.json"));
    return f;
  }();
  return *fixture;
}

bool IsValidUtf8(std::string_view s) {
  std::string repaired;
  polar::AppendValidUtf8(s, /*final=*/true, &repaired);
  return repaired == s;
}

void CheckStreaming(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special) {
  polar::IncrementalDetokenizer detok(tokenizer, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string chunk = detok.Push(id);
    if (!IsValidUtf8(chunk)) Fail("streamed chunk is not valid UTF-8");
    if (detok.pending_bytes() > 3) Fail("detokenizer holds back more than 3 bytes");
    streamed += chunk;
  }
  streamed += detok.Flush();
  std::string expected;
  polar::AppendValidUtf8(tokenizer.Decode(ids, skip_special), /*final=*/true, &expected);
  if (streamed != expected) Fail("streamed text differs from the one-shot decode");
}

// What Decode(Encode(text)) must give: llama.cpp's U+FFFD for invalid bytes,
// minus the bytes the vocabulary cannot spell.
std::string ExpectedRoundTrip(const std::array<bool, 256>& spellable, std::string_view text) {
  std::vector<uint32_t> cps;
  polar::tokenizer_internal::DecodeUtf8Lenient(text, &cps);
  std::string replaced, out;
  for (uint32_t cp : cps) polar::tokenizer_internal::AppendUtf8(cp, &replaced);
  for (char b : replaced) {
    if (spellable[static_cast<uint8_t>(b)]) out += b;
  }
  return out;
}

void CheckIds(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) Fail("Encode produced an id outside the vocabulary");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Fixture& fixture = GetFixture();
  const int mode = (data[0] & 7) % 6;  // bits 3 and 4 are flags
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (mode) {
    case 0:
    case 1:
      for (size_t i = 0; i < fixture.tokenizers.size(); ++i) {
        const Tokenizer& tokenizer = *fixture.tokenizers[i];
        const std::vector<int32_t> ids = tokenizer.Encode(payload, (data[0] & 8) != 0, /*parse_special=*/mode == 0);
        CheckIds(tokenizer, ids);
        const polar::TokenizerData& d = tokenizer.data();
        if (!(data[0] & 8) && !d.normalize_nfc && !d.add_prefix_space &&
            tokenizer.Decode(ids) != ExpectedRoundTrip(fixture.spellable[i], payload)) {
          Fail("Decode(Encode(x)) != x");
        }
        CheckStreaming(tokenizer, ids, (data[0] & 16) != 0);
      }
      break;
    case 2: {
      std::vector<int32_t> ids(payload.size() / 4);
      if (!ids.empty()) std::memcpy(ids.data(), payload.data(), ids.size() * 4);
      for (const auto& tokenizer : fixture.tokenizers) {
        (void)tokenizer->Decode(ids, /*skip_special=*/false);
        CheckStreaming(*tokenizer, ids, (data[0] & 8) != 0);
      }
      break;
    }
    case 3:
    case 5: {
      absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = absl::InternalError("");
      if (mode == 3) {
        tokenizer = Tokenizer::FromTokenizerJson(std::string(payload), "fuzz.json");
      } else {
        auto gguf = polar::GgufFile::FromBuffer(
            std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()), "fuzz.gguf");
        if (gguf.ok()) tokenizer = Tokenizer::FromGguf(**gguf);
      }
      if (!tokenizer.ok()) break;
      for (std::string_view text : {std::string_view("Hello world, <|im_start|> 123 \xF0\x9F\x98\x80\xFF"), payload}) {
        const std::vector<int32_t> ids = (*tokenizer)->Encode(text, true, true);
        CheckIds(**tokenizer, ids);
        CheckStreaming(**tokenizer, ids, false);
      }
      break;
    }
    case 4: {
      // Only JSON reaches the config parser, so skip re-reading the
      // tokenizer.json for anything else.
      if (nlohmann::json::accept(payload.begin(), payload.end())) {
        auto tokenizer = Tokenizer::FromTokenizerJson(fixture.tiny_json, "tiny_llama3.json", std::string(payload));
        if (tokenizer.ok()) {
          const polar::ChatMessage message{"user", "hi"};
          (void)polar::ApplyChatTemplate(**tokenizer, std::span(&message, 1), true);
        }
      }
      // The payload as a template and as message content.
      const polar::ChatMessage messages[] = {{"system", std::string(payload)}, {"user", std::string(payload)}};
      for (const char* tmpl : {"<|im_start|>", "<|start_header_id|>", "[INST] <<SYS>>"}) {
        auto rendered = polar::RenderChat(polar::DetectChatTemplate(tmpl), "<s>", "</s>", messages, true);
        if (!rendered.ok() && std::string_view(tmpl).find("INST") == std::string_view::npos) {
          Fail("ChatML/Llama-3 rendering failed on a non-empty conversation");
        }
      }
      (void)polar::DetectChatTemplate(payload);
      break;
    }
  }
  return 0;
}
