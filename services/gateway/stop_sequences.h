// StopSequenceMatcher: applies a request's stop sequences to a stream of text
// deltas. Generation must end *before* a stop sequence, and a client must
// never see text that later turns out to be the start of one, so the matcher
// holds back the longest suffix of the text so far that is a prefix of some
// stop string and releases it only once it can no longer become a match.
// Works on bytes: the gateway feeds it whole UTF-8 characters
// (IncrementalDetokenizer output), and stop strings are valid UTF-8, so a
// match never splits a character and held-back text is released whole.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace polar {

class StopSequenceMatcher {
 public:
  // Empty stop strings are ignored (validation rejects them earlier).
  explicit StopSequenceMatcher(std::vector<std::string> stops);

  struct Result {
    // Text safe to emit now.
    std::string text;
    // True once a stop sequence matched; `text` then ends just before it and
    // every later Push returns nothing.
    bool matched = false;
    // The stop sequence that matched (the one ending earliest; ties: the
    // longest, i.e. starting earliest).
    std::string stop;
  };

  // Appends `delta` to the stream and returns what may be emitted.
  Result Push(std::string_view delta);
  // End of generation: nothing more can match, release the held-back text.
  std::string Flush();

  bool matched() const { return matched_; }
  size_t held_back_bytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  // Text received but not yet emitted: never longer than the longest stop
  // string minus one byte while no match happened.
  std::string held_;
  bool matched_ = false;
};

}  // namespace polar
