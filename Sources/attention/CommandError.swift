/// An error of the command line's own (an option that conflicts with the input),
/// printed as one line like every other error.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
