// Streaming detokenization: token ids in, text out, where every returned chunk
// is complete, valid UTF-8. A character whose bytes are spread over several
// tokens (emoji, CJK with byte-level merges) is held back until its last byte
// arrives; bytes that can never form a character become U+FFFD, one per
// maximal invalid subpart (the Unicode / WHATWG convention, the same as
// Python's bytes.decode(errors="replace")). Concatenating every Push() and
// the final Flush() equals that replacement applied to Decode(all ids).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"

namespace polar {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = true);

  // Text completed by this token (often empty or one piece).
  std::string Push(int32_t id);
  // Everything still held back, incomplete sequences as U+FFFD; the
  // detokenizer is then empty and may be reused.
  std::string Flush();
  // Bytes held back (an incomplete UTF-8 sequence, at most 3 bytes).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// Appends the valid UTF-8 prefix of `bytes` to `out`, replacing invalid
// subparts with U+FFFD. With `final` false, an incomplete but still valid
// sequence at the very end is not consumed; returns the number of bytes
// consumed.
size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out);

}  // namespace polar
