// StopSequenceMatcher: text that could still become a stop sequence is held
// back; a match ends the text just before the stop string.
#include "services/gateway/stop_sequences.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace polar {
namespace {

// Feeds `deltas` and returns everything emitted (plus the flush when no match).
std::string Feed(StopSequenceMatcher& matcher, const std::vector<std::string>& deltas, std::string* stop = nullptr) {
  std::string out;
  for (const std::string& delta : deltas) {
    auto r = matcher.Push(delta);
    out += r.text;
    if (r.matched) {
      if (stop != nullptr) *stop = r.stop;
      return out;
    }
  }
  return out + matcher.Flush();
}

TEST(GatewayStopSequences, NoStopsPassesEverythingThrough) {
  StopSequenceMatcher matcher({});
  auto r = matcher.Push("hello");
  EXPECT_EQ(r.text, "hello");
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(matcher.held_back_bytes(), 0u);
}

TEST(GatewayStopSequences, MatchWithinOneDelta) {
  StopSequenceMatcher matcher({"END"});
  auto r = matcher.Push("abcENDdef");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.text, "abc");
  EXPECT_EQ(r.stop, "END");
  EXPECT_TRUE(matcher.Push("more").text.empty());
}

TEST(GatewayStopSequences, HoldsBackPossiblePrefixAcrossDeltas) {
  StopSequenceMatcher matcher({"\n\nUser:"});
  auto r = matcher.Push("Hi there\n");
  EXPECT_EQ(r.text, "Hi there");  // "\n" could start the stop string
  EXPECT_EQ(matcher.held_back_bytes(), 1u);
  r = matcher.Push("\nUs");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(matcher.held_back_bytes(), 4u);
  r = matcher.Push("er: next");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.stop, "\n\nUser:");
}

TEST(GatewayStopSequences, ReleasesHeldTextWhenItCannotMatch) {
  StopSequenceMatcher matcher({"abc"});
  EXPECT_EQ(matcher.Push("xab").text, "x");
  EXPECT_EQ(matcher.Push("d").text, "abd");
  EXPECT_EQ(matcher.held_back_bytes(), 0u);
}

TEST(GatewayStopSequences, HeldTextRestartsAPrefix) {
  // "aab": after "aa" the suffix "a" is still a prefix of "ab".
  StopSequenceMatcher matcher({"ab"});
  EXPECT_EQ(matcher.Push("aa").text, "a");
  auto r = matcher.Push("b");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.text, "");
}

TEST(GatewayStopSequences, FlushReleasesHeldTextAtTheEnd) {
  StopSequenceMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("go ST").text, "go ");
  EXPECT_EQ(matcher.Flush(), "ST");
}

TEST(GatewayStopSequences, EarliestEndingStopWins) {
  StopSequenceMatcher matcher({"bcd", "bc"});
  std::string stop;
  EXPECT_EQ(Feed(matcher, {"abcde"}, &stop), "a");
  EXPECT_EQ(stop, "bc");
}

TEST(GatewayStopSequences, LongestSuffixOverAllStopsIsHeld) {
  StopSequenceMatcher matcher({"xy", "yzw"});
  // "…yz": "yz" is a prefix of "yzw" (2 bytes), longer than any "xy" prefix.
  EXPECT_EQ(matcher.Push("ayz").text, "a");
  EXPECT_EQ(matcher.held_back_bytes(), 2u);
}

TEST(GatewayStopSequences, ByteAtATimeEqualsWhole) {
  const std::string text = "The answer is 42.\nQ: why?\nA: because";
  for (const std::vector<std::string>& stops :
       std::vector<std::vector<std::string>>{{"\nQ:"}, {"because"}, {"zzz"}, {"42", "\n"}}) {
    StopSequenceMatcher whole(stops);
    std::string whole_stop;
    const std::string expected = Feed(whole, {text}, &whole_stop);
    StopSequenceMatcher bytes(stops);
    std::vector<std::string> deltas;
    for (char c : text) deltas.push_back(std::string(1, c));
    std::string byte_stop;
    EXPECT_EQ(Feed(bytes, deltas, &byte_stop), expected);
    EXPECT_EQ(byte_stop, whole_stop);
  }
}

TEST(GatewayStopSequences, NeverEmitsAPrefixOfAStop) {
  // Whatever has been emitted, together with any future text, must not let a
  // stop string start inside the emitted part: so the emitted text never ends
  // with a proper prefix of the stop.
  StopSequenceMatcher matcher({"<eos>"});
  std::string emitted;
  for (const char* delta : {"a<", "e", "o", "x", "<e", "os> tail"}) {
    auto r = matcher.Push(delta);
    emitted += r.text;
    for (size_t len = 1; len < 5 && len <= emitted.size(); ++len) {
      if (r.matched) break;
      EXPECT_NE(emitted.substr(emitted.size() - len), std::string("<eos>").substr(0, len)) << emitted;
    }
  }
  EXPECT_EQ(emitted, "a<eox");
  EXPECT_TRUE(matcher.matched());
}

TEST(GatewayStopSequences, EmptyStopStringsAreIgnored) {
  StopSequenceMatcher matcher({""});
  auto r = matcher.Push("abc");
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(r.text, "abc");
}

TEST(GatewayStopSequences, MultiByteUtf8StopSequence) {
  StopSequenceMatcher matcher({"é!"});
  EXPECT_EQ(matcher.Push("café").text, "caf");
  auto r = matcher.Push("!x");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.text, "");
}

}  // namespace
}  // namespace polar
