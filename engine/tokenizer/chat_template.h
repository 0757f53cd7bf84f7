// Chat templates without a Jinja engine: the model's template string is
// recognised as one of the few families in use by its markers and rendered in
// C++ exactly as transformers' apply_chat_template renders it:
//
//   ChatML   (<|im_start|>): SmolLM, Qwen2. A default system prompt written in
//            the template ("<|im_start|>system\n...<|im_end|>" as a literal)
//            is added when the first message is not a system message.
//   Llama-3  (<|start_header_id|>): bos, then per message
//            "<|start_header_id|>role<|end_header_id|>\n\n" + trim(content)
//            + "<|eot_id|>" (the Llama-3.0 template; 3.1's dated system
//            preamble and tool calls are not reproduced).
//   Llama-2  ([INST] with <<SYS>>): strict user/assistant alternation.
//
// An empty or unrecognised template falls back to plain ChatML without a
// default system prompt (what llama.cpp's server also does for unknown
// templates); `recognized` says which happened so callers can log it.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"

namespace polar {

struct ChatMessage {
  std::string role;
  std::string content;
};

enum class ChatTemplateFamily { kChatMl, kLlama3, kLlama2 };

struct ChatTemplateInfo {
  ChatTemplateFamily family = ChatTemplateFamily::kChatMl;
  bool recognized = false;
  std::string default_system_prompt;  // ChatML only; empty if none
};

ChatTemplateInfo DetectChatTemplate(std::string_view jinja_template);

// Renders with an explicit template kind; bos/eos are the token strings the
// Llama templates insert. Errors (InvalidArgument): an empty conversation,
// Llama-2 roles that do not alternate.
absl::StatusOr<std::string> RenderChat(const ChatTemplateInfo& info, std::string_view bos, std::string_view eos,
                                       std::span<const ChatMessage> messages, bool add_generation_prompt);

// Renders `messages` with the tokenizer's chat template (and its bos/eos).
absl::StatusOr<std::string> ApplyChatTemplate(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                                              bool add_generation_prompt);

}  // namespace polar
