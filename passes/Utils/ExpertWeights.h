//===- ExpertWeights.h - routing profiles and expert weight slices -*- C++
//-*-===//
//
// What ds-prune-experts and ds-place-experts share: the routing profile
// `ds-run --profile-routing` writes (selections per expert, per routing
// site) and the stacked expert weights rewritten to a list of their slices
// (`select` on their ds.params, through a fused gate/up ds.split too).
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_UTILS_EXPERTWEIGHTS_H
#define DS_PASSES_UTILS_EXPERTWEIGHTS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Location.h"
#include "mlir/Support/LLVM.h"

#include <map>
#include <string>
#include <vector>

namespace ds {

/// Selections per expert (in the site's kept-expert numbering), by routing
/// site name (ds::getRoutingSiteName).
using RoutingProfile = std::map<std::string, std::vector<int64_t>>;

/// Reads a `ds-routing-profile` JSON file; errors are emitted at `loc`.
mlir::FailureOr<RoutingProfile> loadRoutingProfile(llvm::StringRef path,
                                                   mlir::Location loc);

/// The stacked expert weight `v` ([E, ...]) restricted to the slices
/// `local` lists, in that order (repeats allowed), as a new ds.param (or a
/// ds.split of one); null when `v` is not a ds.param or a split of one, or
/// is sharded.
mlir::Value selectExpertWeight(mlir::OpBuilder &b, mlir::Value v,
                               llvm::ArrayRef<int64_t> local);

/// Every ds.moe under `root` with its routing site name, all named before
/// any is rewritten (rewriting must not shift the ordinals of later sites).
llvm::SmallVector<std::pair<MoEOp, std::string>>
collectRoutingSites(mlir::Operation *root);

/// The profile's selections for `op`'s site `name`: null when the profile
/// has none, an error when they do not number the experts `op` routes to.
mlir::FailureOr<const std::vector<int64_t> *>
siteCounts(const RoutingProfile &profile, MoEOp op, llvm::StringRef name);

/// Makes `op` route over slices `local` of its routed expert weights
/// (selectExpertWeight on gate, up and down), with `kept` and `slots` in its
/// routing; an error naming what was to be done (`done`: "pruned",
/// "placed") when a weight is not a ds.param or a split of one.
mlir::LogicalResult rewriteExperts(MoEOp op, llvm::ArrayRef<int64_t> local,
                                   llvm::ArrayRef<int64_t> kept,
                                   llvm::ArrayRef<int64_t> slots,
                                   llvm::StringRef done);

} // namespace ds

#endif // DS_PASSES_UTILS_EXPERTWEIGHTS_H
