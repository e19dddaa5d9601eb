//===- Pipeline.cpp - a pipeline stage's runs: micro-batches, results -----===//
//
// A pipeline stage's plan (ds-partition{pp}) runs a block of the model's
// layers: its functions receive the previous stage's activations and send
// theirs to the next (Recv / Send steps), and the last stage's functions
// compute the logits. Executor::run on such a plan splits the rows into
// micro-batches that follow each other through the stages (stage k runs
// micro-batch i + 1 while stage k + 1 runs micro-batch i: a send waits only
// for the next stage to take the activations), then the last stage hands
// its results to every stage of its pipeline, so every process's run
// returns what one process's run of the whole model returns, and callers
// (sessions, generation, lockstep) stay as they are.
//
// Micro-batches are contiguous blocks of the sequences (the leading dim of
// the inputs), or of the positions of one sequence. A block of positions
// runs after the positions before it, whose keys and values every stage has
// then written: the rows attend to what they would in one run, and the
// kernels are batch invariant, so the results are the same bits.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Executor.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cstring>

namespace ds::rt {

namespace {

/// Rows below which the default does not cut a micro-batch.
constexpr int64_t kMinRowsPerMicroBatch = 16;
/// Bounds on what a stage's broadcast results may declare.
constexpr int64_t kMaxResults = 1024, kMaxRank = 8;

/// `t` cut to [begin, end) along `dim`, where every dim before `dim` is 1
/// or `dim` is 0 (so the block is contiguous).
HostTensor sliceRows(const HostTensor &t, size_t dim, int64_t begin,
                     int64_t end) {
  std::vector<int64_t> shape = t.shape;
  int64_t inner = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d)
    inner *= shape[d];
  shape[dim] = end - begin;
  HostTensor out(t.dtype, shape);
  const size_t unit = inner * dtypeSize(t.dtype);
  std::memcpy(out.bytes.data(), t.bytes.data() + begin * unit,
              (end - begin) * unit);
  return out;
}

/// The results as bytes (count; per tensor dtype, rank, dims; the data)
/// and back: what the last stage broadcasts.
std::vector<uint8_t> serialize(const std::vector<HostTensor> &results) {
  std::vector<int64_t> header = {static_cast<int64_t>(results.size())};
  for (const HostTensor &t : results) {
    header.push_back(static_cast<int64_t>(t.dtype));
    header.push_back(static_cast<int64_t>(t.shape.size()));
    header.insert(header.end(), t.shape.begin(), t.shape.end());
  }
  std::vector<uint8_t> out(header.size() * sizeof(int64_t));
  std::memcpy(out.data(), header.data(), out.size());
  for (const HostTensor &t : results)
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

absl::StatusOr<std::vector<HostTensor>>
deserialize(const std::vector<uint8_t> &bytes) {
  auto bad = [] {
    return absl::DataLossError("a malformed result from the last pipeline "
                               "stage");
  };
  size_t at = 0;
  auto next = [&](int64_t &v) {
    if (at + sizeof(int64_t) > bytes.size())
      return false;
    std::memcpy(&v, bytes.data() + at, sizeof(int64_t));
    at += sizeof(int64_t);
    return true;
  };
  int64_t count = 0;
  if (!next(count) || count < 0 || count > kMaxResults)
    return bad();
  std::vector<std::pair<DType, std::vector<int64_t>>> shapes;
  for (int64_t i = 0; i < count; ++i) {
    int64_t dtype = 0, rank = 0;
    if (!next(dtype) || !next(rank) || rank < 0 || rank > kMaxRank ||
        (dtype != static_cast<int64_t>(DType::F32) &&
         dtype != static_cast<int64_t>(DType::I64) &&
         dtype != static_cast<int64_t>(DType::I32)))
      return bad();
    std::vector<int64_t> shape(rank);
    for (int64_t &d : shape)
      if (!next(d) || d < 0)
        return bad();
    shapes.push_back({static_cast<DType>(dtype), std::move(shape)});
  }
  // The sizes are checked against the bytes before anything is allocated.
  std::vector<HostTensor> out;
  for (auto &[dtype, shape] : shapes) {
    uint64_t n = dtypeSize(dtype);
    for (int64_t d : shape) {
      if (d && n > (bytes.size() - at) / static_cast<uint64_t>(d))
        return bad();
      n *= static_cast<uint64_t>(d);
    }
    if (n > bytes.size() - at)
      return bad();
    out.emplace_back(dtype, shape);
    std::memcpy(out.back().bytes.data(), bytes.data() + at, n);
    at += n;
  }
  if (at != bytes.size())
    return bad();
  return out;
}

} // namespace

absl::StatusOr<std::vector<HostTensor>>
Executor::runPipelined(const std::string &function,
                       const std::vector<const HostTensor *> &inputs,
                       KVCache *cache, const std::vector<int64_t> &slots,
                       const std::vector<int64_t> *outputRows) {
  const ModelPlan &mp = model->plan();
  Communicator *world = device->communicator();
  if (!world || world->size() != mp.processes || world->rank() != mp.process)
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan is pipeline stage process ", mp.process, " of ", mp.processes,
        ": launch one process per rank with mpirun, from a ds built with "
        "MPI"));
  const std::vector<int64_t> stageAxes = {mp.pipelineAxis};
  if (!groupsBuilt) {
    // The stages run different steps, so the groups their collectives use
    // are built here, all of them, in one order on every process. Every
    // process must cut a step into as many micro-batches: their settings
    // are compared once (the sum of each and of its square).
    if (absl::Status st = buildAllGroups(*world, mp.grid); !st.ok())
      return st;
    const float mine = static_cast<float>(microBatches);
    float sums[2] = {mine, mine * mine};
    if (absl::Status st = world->allReduceSum(sums, 2); !st.ok())
      return st;
    const float n = static_cast<float>(mp.processes);
    if (sums[0] != n * mine || sums[1] != n * mine * mine)
      return absl::InvalidArgumentError(absl::StrCat(
          "the processes of a pipeline set different micro-batch counts "
          "(this one ",
          microBatches, "): every process must set the same"));
    groupsBuilt = true;
  }
  absl::StatusOr<Communicator *> stagesComm = world->group(mp.grid, stageAxes);
  if (!stagesComm.ok())
    return stagesComm.status();
  const GridGroup place = gridGroupOf(mp.grid, stageAxes, mp.process);
  const bool lastStage = place.index == place.size - 1;

  // Micro-batches along the sequences, or along one sequence's positions
  // (only when the function reads a KV cache: a later block of positions
  // sees the earlier ones through it). Not with data parallelism: the
  // replicas' inputs differ, and the experts' all-to-all between them must
  // meet as often on each.
  const FunctionPlan *fn = mp.find(function);
  if (!fn)
    return absl::NotFoundError("the model has no function '" + function + "'");
  const bool cached =
      cache &&
      std::any_of(fn->values.begin(), fn->values.end(), [](const ValueInfo &v) {
        return v.kind == ValueInfo::Kind::Cache;
      });
  bool splittable = !inputs.empty() && mp.batchAxes.empty();
  for (const HostTensor *t : inputs)
    splittable &= t->shape.size() >= 2 && t->shape[0] == inputs[0]->shape[0] &&
                  t->shape[1] == inputs[0]->shape[1];
  size_t dim = 0;
  int64_t extent = 1, rowsPerUnit = 1;
  if (splittable) {
    dim = inputs[0]->shape[0] > 1 || !cached ? 0 : 1;
    extent = inputs[0]->shape[dim];
    rowsPerUnit = dim == 0 ? inputs[0]->shape[1] : 1;
  }
  // By default one per stage, each of at least kMinRowsPerMicroBatch rows:
  // every micro-batch reads the stage's weights again, which only pays
  // when a block of rows costs more than reading them (prefill, large
  // batches), not for a few decode rows.
  const int64_t rows = extent * rowsPerUnit;
  const int64_t wanted =
      microBatches > 0
          ? microBatches
          : std::min<int64_t>(place.size, rows / kMinRowsPerMicroBatch);
  const int64_t parts =
      splittable ? std::max<int64_t>(1, std::min(wanted, extent)) : 1;
  if (outputRows && splittable)
    for (size_t i = 0; i < outputRows->size(); ++i) {
      const int64_t r = (*outputRows)[i];
      if (r < 0 || r >= extent * rowsPerUnit ||
          (i && r <= (*outputRows)[i - 1]))
        return absl::InvalidArgumentError(
            absl::StrCat(function, ": selected rows must increase within [0, ",
                         extent * rowsPerUnit, ")"));
    }

  std::vector<std::vector<HostTensor>> partResults;
  std::vector<uint8_t> bytes;
  // The parts through this stage; the last stage's results, the parts'
  // concatenated along the split, as bytes.
  auto runParts = [&]() -> absl::Status {
    for (int64_t part = 0; part < parts; ++part) {
      const int64_t begin = extent * part / parts,
                    end = extent * (part + 1) / parts;
      std::vector<HostTensor> sliced;
      std::vector<const HostTensor *> partInputs = inputs;
      std::vector<int64_t> partSlots = slots;
      if (parts > 1) {
        for (const HostTensor *t : inputs)
          sliced.push_back(sliceRows(*t, dim, begin, end));
        for (size_t i = 0; i < inputs.size(); ++i)
          partInputs[i] = &sliced[i];
        if (dim == 0 && slots.size() == static_cast<size_t>(extent))
          partSlots.assign(slots.begin() + begin, slots.begin() + end);
      }
      // The last stage computes the wanted rows of this part (its last row
      // when none is: the layers run all the same, the logits are dropped).
      std::vector<int64_t> rows;
      const std::vector<int64_t> *partRows =
          lastStage && parts == 1 ? outputRows : nullptr;
      if (outputRows && lastStage && parts > 1) {
        const int64_t first = begin * rowsPerUnit, stop = end * rowsPerUnit;
        for (int64_t r : *outputRows)
          if (r >= first && r < stop)
            rows.push_back(r - first);
        if (rows.empty())
          rows.push_back(stop - first - 1);
        partRows = &rows;
      }
      absl::StatusOr<std::vector<HostTensor>> out =
          runOnce(function, partInputs, cache, partSlots, partRows);
      if (!out.ok())
        return out.status();
      if (lastStage && parts > 1 && outputRows && rows.size() == 1 &&
          !out->empty()) {
        const int64_t first = begin * rowsPerUnit;
        bool kept = std::binary_search(outputRows->begin(), outputRows->end(),
                                       first + rows[0]);
        if (!kept) {
          (*out)[0].shape[0] = 0;
          (*out)[0].bytes.clear();
        }
      }
      partResults.push_back(std::move(*out));
    }

    if (lastStage) {
      std::vector<HostTensor> results;
      for (size_t k = 0; k < partResults.front().size(); ++k) {
        std::vector<int64_t> shape = partResults.front()[k].shape;
        const size_t along = (k == 0 && outputRows) ? 0 : dim;
        if (shape.size() <= along)
          return absl::InternalError(function + ": a result without the split "
                                                "dim");
        shape[along] = 0;
        for (const auto &p : partResults)
          shape[along] += p[k].shape[along];
        HostTensor whole(partResults.front()[k].dtype, shape);
        size_t at = 0;
        for (const auto &p : partResults) {
          std::memcpy(whole.bytes.data() + at, p[k].bytes.data(),
                      p[k].bytes.size());
          at += p[k].bytes.size();
        }
        results.push_back(std::move(whole));
      }
      bytes = serialize(results);
    }
    return absl::OkStatus();
  };
  absl::Status ran = runParts();
  if (!ran.ok() && !lastStage)
    return ran; // the stages after this one wait in vain: the job must end
  // A failed last stage broadcasts -1, so the others return an error
  // rather than wait.
  int64_t size = ran.ok() ? static_cast<int64_t>(bytes.size()) : -1;
  const int root = static_cast<int>(place.size - 1);
  if (absl::Status st = (*stagesComm)->broadcast(&size, sizeof size, root);
      !st.ok())
    return st;
  if (!ran.ok())
    return ran;
  if (size < 0)
    return absl::AbortedError(
        absl::StrCat(function, ": the last pipeline stage failed this step"));
  if (size > (int64_t{1} << 40))
    return absl::DataLossError("a malformed result size from the last "
                               "pipeline stage");
  bytes.resize(size);
  if (absl::Status st = (*stagesComm)->broadcast(bytes.data(), size, root);
      !st.ok())
    return st;
  return deserialize(bytes);
}

} // namespace ds::rt
