// Reading a whole small file (config.json, tokenizer.json, index files) into
// a string, with errors that name the file.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace polar {

absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace polar
