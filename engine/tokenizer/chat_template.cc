// Chat template families rendered in C++ (see chat_template.h).
#include "engine/tokenizer/chat_template.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/unicode_text.h"

namespace polar {
namespace {

constexpr std::string_view kImStartSystem = "<|im_start|>system";
constexpr std::string_view kImEnd = "<|im_end|>";

// Undoes the escapes a Jinja string literal may use; returns false for text
// that cannot be a plain literal (quotes, expressions).
bool UnescapeJinjaLiteral(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '\'' || c == '"' || c == '{' || c == '}') return false;
    if (c != '\\') {
      out->push_back(c);
      continue;
    }
    if (++i == in.size()) return false;
    switch (in[i]) {
      case 'n': out->push_back('\n'); break;
      case 't': out->push_back('\t'); break;
      case '\\': out->push_back('\\'); break;
      case '\'': out->push_back('\''); break;
      case '"': out->push_back('"'); break;
      default: return false;
    }
  }
  return true;
}

// The first "<|im_start|>system\n<literal><|im_end|>" whose middle is plain
// text: the system prompt the template adds by itself.
std::string FindDefaultSystemPrompt(std::string_view tmpl) {
  size_t pos = 0;
  while ((pos = tmpl.find(kImStartSystem, pos)) != std::string_view::npos) {
    pos += kImStartSystem.size();
    std::string_view rest = tmpl.substr(pos);
    if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else {
      continue;
    }
    const size_t end = rest.find(kImEnd);
    if (end == std::string_view::npos) break;
    std::string prompt;
    if (end > 0 && UnescapeJinjaLiteral(rest.substr(0, end), &prompt)) return prompt;
  }
  return {};
}

// The well-formed UTF-8 character at s[i] (false for anything else).
bool CharAt(std::string_view s, size_t i, uint32_t* cp, size_t* len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  const int n = tokenizer_internal::Utf8SequenceLength(b0);
  if ((b0 >= 0x80 && b0 < 0xC2) || b0 > 0xF4 || i + n > s.size()) return false;
  uint32_t value = n == 1 ? b0 : n == 2 ? (b0 & 0x1Fu) : n == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
  for (int k = 1; k < n; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return false;
    value = (value << 6) | (b & 0x3Fu);
  }
  *cp = value;
  *len = n;
  return true;
}

// Python's str.strip(), which Jinja's trim filter and .strip() call. Bytes
// that are not valid UTF-8 count as non-space.
std::string_view StripPythonSpace(std::string_view s) {
  using tokenizer_internal::IsPythonSpace;
  uint32_t cp;
  size_t len;
  size_t begin = 0;
  while (begin < s.size() && CharAt(s, begin, &cp, &len) && IsPythonSpace(cp)) begin += len;
  size_t end = s.size();
  while (end > begin) {
    // Start of the last character: back over up to 3 continuation bytes.
    size_t start = end - 1;
    while (start > begin && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    if (!CharAt(s, start, &cp, &len) || start + len != end || !IsPythonSpace(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string RenderChatMl(const ChatTemplateInfo& info, std::span<const ChatMessage> messages,
                         bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && messages[0].role != "system" && !info.default_system_prompt.empty()) {
      absl::StrAppend(&out, "<|im_start|>system\n", info.default_system_prompt, "<|im_end|>\n");
    }
    absl::StrAppend(&out, "<|im_start|>", messages[i].role, "\n", messages[i].content, "<|im_end|>\n");
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string RenderLlama3(std::string_view bos, std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out.append(bos);
    const std::string_view content = StripPythonSpace(messages[i].content);
    absl::StrAppend(&out, "<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n",
                    absl::string_view(content.data(), content.size()), "<|eot_id|>");
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

absl::StatusOr<std::string> RenderLlama2(std::string_view bos, std::string_view eos,
                                         std::span<const ChatMessage> messages) {
  std::span<const ChatMessage> turns = messages;
  const ChatMessage* system = nullptr;
  if (!messages.empty() && messages[0].role == "system") {
    system = &messages[0];
    turns = messages.subspan(1);
  }
  std::string out;
  for (size_t i = 0; i < turns.size(); ++i) {
    const bool is_user = turns[i].role == "user";
    if (is_user != (i % 2 == 0)) {
      return absl::InvalidArgumentError("Conversation roles must alternate user/assistant/user/assistant/...");
    }
    std::string content = turns[i].content;
    if (i == 0 && system != nullptr) content = absl::StrCat("<<SYS>>\n", system->content, "\n<</SYS>>\n\n", content);
    const std::string_view stripped = StripPythonSpace(content);
    const absl::string_view body(stripped.data(), stripped.size());
    if (is_user) {
      absl::StrAppend(&out, absl::string_view(bos.data(), bos.size()), "[INST] ", body, " [/INST]");
    } else if (turns[i].role == "assistant") {
      absl::StrAppend(&out, " ", body, " ", absl::string_view(eos.data(), eos.size()));
    }
  }
  return out;
}

}  // namespace

ChatTemplateInfo DetectChatTemplate(std::string_view tmpl) {
  ChatTemplateInfo info;
  if (tmpl.find("<|im_start|>") != std::string_view::npos) {
    info.family = ChatTemplateFamily::kChatMl;
    info.recognized = true;
    info.default_system_prompt = FindDefaultSystemPrompt(tmpl);
  } else if (tmpl.find("<|start_header_id|>") != std::string_view::npos) {
    info.family = ChatTemplateFamily::kLlama3;
    info.recognized = true;
  } else if (tmpl.find("[INST]") != std::string_view::npos && tmpl.find("<<SYS>>") != std::string_view::npos) {
    info.family = ChatTemplateFamily::kLlama2;
    info.recognized = true;
  }
  return info;
}

absl::StatusOr<std::string> RenderChat(const ChatTemplateInfo& info, std::string_view bos, std::string_view eos,
                                       std::span<const ChatMessage> messages, bool add_generation_prompt) {
  // transformers refuses these too; a prompt of only a generation header is
  // never what a client meant.
  if (messages.empty()) return absl::InvalidArgumentError("cannot apply a chat template to an empty conversation");
  switch (info.family) {
    case ChatTemplateFamily::kChatMl:
      return RenderChatMl(info, messages, add_generation_prompt);
    case ChatTemplateFamily::kLlama3:
      return RenderLlama3(bos, messages, add_generation_prompt);
    case ChatTemplateFamily::kLlama2:
      return RenderLlama2(bos, eos, messages);
  }
  return absl::InternalError("unknown chat template family");
}

absl::StatusOr<std::string> ApplyChatTemplate(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  const ChatTemplateInfo info = DetectChatTemplate(tokenizer.chat_template());
  return RenderChat(info, tokenizer.TokenText(tokenizer.bos_id()), tokenizer.TokenText(tokenizer.eos_id()), messages,
                    add_generation_prompt);
}

}  // namespace polar
