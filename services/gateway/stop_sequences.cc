// See stop_sequences.h. Stop lists are short (<= 16 strings of <= 256 bytes),
// so plain searches over the held-back window are cheaper than building an
// automaton per request.
#include "services/gateway/stop_sequences.h"

#include <algorithm>
#include <utility>

namespace polar {

StopSequenceMatcher::StopSequenceMatcher(std::vector<std::string> stops) {
  for (auto& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

StopSequenceMatcher::Result StopSequenceMatcher::Push(std::string_view delta) {
  Result result;
  if (matched_) return result;
  held_.append(delta);

  // The earliest-ending match wins: it is the first the client would see.
  size_t best_end = std::string::npos;
  size_t best_begin = 0;
  const std::string* best_stop = nullptr;
  for (const std::string& stop : stops_) {
    size_t pos = held_.find(stop);
    if (pos == std::string::npos) continue;
    size_t end = pos + stop.size();
    if (best_stop == nullptr || end < best_end || (end == best_end && pos < best_begin)) {
      best_end = end;
      best_begin = pos;
      best_stop = &stop;
    }
  }
  if (best_stop != nullptr) {
    matched_ = true;
    result.matched = true;
    result.stop = *best_stop;
    result.text = held_.substr(0, best_begin);
    held_.clear();
    return result;
  }

  // Hold back the longest suffix of held_ that is a proper prefix of a stop.
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    size_t max_len = std::min(stop.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (std::string_view(held_).substr(held_.size() - len) == std::string_view(stop).substr(0, len)) {
        keep = len;
        break;
      }
    }
  }
  result.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopSequenceMatcher::Flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace polar
