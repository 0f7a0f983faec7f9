// Declarations shared by the filter files (filters.cc: registry, text and number
// filters; filters_seq.cc: sequence and mapping filters). Internal to the
// chat-template library.
#pragma once

#include <string_view>

#include "common/chat_template/evaluator.h"

namespace krasis::chat_template {

#define KRASIS_FILTER(fn) \
  absl::StatusOr<Value> fn([[maybe_unused]] Evaluator& ev, [[maybe_unused]] const Value& v, \
                          [[maybe_unused]] CallArgs& args)

// Sequence and mapping filters (filters_seq.cc).
KRASIS_FILTER(FilterBatch);
KRASIS_FILTER(FilterDictsort);
KRASIS_FILTER(FilterFirst);
KRASIS_FILTER(FilterItems);
KRASIS_FILTER(FilterJoin);
KRASIS_FILTER(FilterLast);
KRASIS_FILTER(FilterLength);
KRASIS_FILTER(FilterList);
KRASIS_FILTER(FilterMap);
KRASIS_FILTER(FilterMax);
KRASIS_FILTER(FilterMin);
KRASIS_FILTER(FilterReject);
KRASIS_FILTER(FilterRejectattr);
KRASIS_FILTER(FilterReverse);
KRASIS_FILTER(FilterSelect);
KRASIS_FILTER(FilterSelectattr);
KRASIS_FILTER(FilterSlice);
KRASIS_FILTER(FilterSort);
KRASIS_FILTER(FilterSum);
KRASIS_FILTER(FilterUnique);

// jinja2's make_attrgetter: "a.b.0" looked up with getitem, part by part.
absl::StatusOr<Value> GetAttributePath(Evaluator& ev, const Value& item, const Value& attribute);

}  // namespace krasis::chat_template
