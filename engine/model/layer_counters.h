// Per-layer activity counters for the metrics: units computed and units in
// total (heads for head sparsity, fc1 neurons for MLP sparsity), each
// counted once per token, cumulative over steps. Atomics: the engine thread
// adds to them while the metrics read them from another thread, no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace polar {

struct LayerCounters {
  explicit LayerCounters(int64_t num_layers)
      : num_layers(num_layers),
        active(new std::atomic<int64_t>[num_layers]()),
        total(new std::atomic<int64_t>[num_layers]()) {}
  int64_t num_layers;
  std::unique_ptr<std::atomic<int64_t>[]> active;  // [num_layers]
  std::unique_ptr<std::atomic<int64_t>[]> total;   // [num_layers]
};

}  // namespace polar
