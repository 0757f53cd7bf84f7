// The polar subcommands. Each takes the arguments after its name and returns
// the process exit status; errors are printed to stderr by main.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace polar::cli {

absl::Status RunGenerate(const std::vector<std::string>& argv);
absl::Status RunTokenize(const std::vector<std::string>& argv);
absl::Status RunModel(const std::vector<std::string>& argv);  // info | synth
absl::Status RunLogits(const std::vector<std::string>& argv);
absl::Status RunBench(const std::vector<std::string>& argv);
absl::Status RunEval(const std::vector<std::string>& argv);
absl::Status RunCalibrate(const std::vector<std::string>& argv);

}  // namespace polar::cli
