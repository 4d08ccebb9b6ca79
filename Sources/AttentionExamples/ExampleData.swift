import Foundation

/// Errors finding the bundled example data.
public enum ExampleDataError: Error, CustomStringConvertible {
    /// The named resource is not in the bundle (a packaging problem).
    case missingResource(String)

    public var description: String {
        switch self {
        case let .missingResource(name): return "bundled example data \(name) not found in \(Bundle.module.bundlePath)"
        }
    }
}

/// Access to the files in `Resources/` (see its README for provenance).
enum ExampleData {
    static func url(forResource name: String) throws -> URL {
        guard let directory = Bundle.module.url(forResource: "Resources", withExtension: nil) else {
            throw ExampleDataError.missingResource("Resources")
        }
        let url = directory.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else { throw ExampleDataError.missingResource(name) }
        return url
    }
}
