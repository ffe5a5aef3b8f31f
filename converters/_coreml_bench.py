"""The Core ML device bundle's native runner: ``Bench.swift``, which times the package on a Mac, iPhone or iPad
under bitedge's latency protocol and prints a results.json (latency only) for ``bitedge bench --import``.

Written, not run, here: this machine has no Swift toolchain and Core ML runs only on Apple's systems.
"""

from __future__ import annotations

SWIFT = """// Bench.swift: time model.mlpackage on this Mac, iPhone or iPad under bitedge's latency protocol.
// macOS:  xcrun coremlcompiler compile model.mlpackage . && swift Bench.swift > results.json
// iOS/iPadOS: add model.mlpackage, bundle.json, input.png and this file to an app target; call runBench().
// Then, beside bundle.json on the machine that made the bundle: bitedge bench --import results.json
import CoreML
import Foundation

func milliseconds(_ block: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try block()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

func runBench(computeUnits: MLComputeUnits = .all) throws -> String {
    let bundleData = try Data(contentsOf: URL(fileURLWithPath: "bundle.json"))
    let bundle = try JSONSerialization.jsonObject(with: bundleData) as! [String: Any]
    let timing = bundle["protocol"] as! [String: Any]
    let inputName = (bundle["input"] as! [String: Any])["name"] as! String
    let batch = bundle["batch"] as! Int
    let configuration = MLModelConfiguration()
    configuration.computeUnits = computeUnits
    var loaded: MLModel? = nil
    let loadMs = try milliseconds {
        loaded = try MLModel(contentsOf: URL(fileURLWithPath: "model.mlmodelc"), configuration: configuration)
    }
    let model = loaded!
    let constraint = model.modelDescription.inputDescriptionsByName[inputName]!.imageConstraint!
    let image = try MLFeatureValue(imageAt: URL(fileURLWithPath: "input.png"), constraint: constraint)
    let input = try MLDictionaryFeatureProvider(dictionary: [inputName: image])
    let firstMs = try milliseconds { _ = try model.prediction(from: input) }
    let warmRuns = timing["warmup_runs"] as! Int, warmSeconds = timing["warmup_seconds"] as! Double
    let minRuns = timing["min_runs"] as! Int, minSeconds = timing["min_seconds"] as! Double
    let warmStart = Date()
    var warm = 0
    while warm < warmRuns || Date().timeIntervalSince(warmStart) < warmSeconds {
        _ = try model.prediction(from: input)
        warm += 1
    }
    var samples: [Double] = []
    while samples.count < minRuns || samples.reduce(0, +) < minSeconds * 1000 {
        samples.append(try milliseconds { _ = try model.prediction(from: input) })
    }
    samples.sort()
    let cut = samples.count / 10
    let trimmed = samples[cut..<(samples.count - cut)]
    func percentile(_ p: Double) -> Double { samples[min(samples.count - 1, Int(p * Double(samples.count)))] }
    let median = percentile(0.5)
    let latency: [String: Any] = [
        "runs": samples.count, "median": median, "p90": percentile(0.9), "p99": percentile(0.99),
        "trimmed_mean": trimmed.reduce(0, +) / Double(trimmed.count),
        "mean": samples.reduce(0, +) / Double(samples.count), "min": samples.first!, "max": samples.last!,
        "throughput": Double(batch) / (median / 1000),
    ]
    let info = ProcessInfo.processInfo
    let results: [String: Any] = [
        "format": "bitedge-device-results-1", "source": "Bench.swift", "bundle": ["id": bundle["id"] as! String],
        "device": ["platform": info.operatingSystemVersionString, "cores": info.processorCount,
                   "memory_gib": Double(info.physicalMemory) / 1073741824, "hostname": info.hostName],
        "runtime": ["name": "Core ML", "compute_units": String(describing: computeUnits.rawValue)],
        "batch": batch, "load_seconds": loadMs / 1000, "first_inference_ms": firstMs,
        "latency_ms": latency, "samples_ms": samples,
    ]
    let data = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
    return String(data: data, encoding: .utf8)!
}

print(try runBench())
"""
