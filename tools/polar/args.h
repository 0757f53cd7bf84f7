// Command-line arguments of one polar subcommand: `--name value`,
// `--name=value` and bare `--flag` options, plus positional arguments. Each
// subcommand declares the options it knows; anything else is an error, so a
// typo never silently falls back to a default.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace polar::cli {

class Args {
 public:
  // `valued` options take a value, `flags` do not.
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& valued,
                                    const std::set<std::string>& flags);
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace polar::cli
