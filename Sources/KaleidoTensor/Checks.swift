/// Kaleido's `precondition` and `preconditionFailure`, which every Kaleido module sees instead of
/// the standard library's (a declaration in an imported module shadows one in `Swift`).
///
/// Why: in an optimised build the standard library's versions still stop the program, but drop
/// the message — a user sees "precondition failure" and a backtrace, not which shape, file or
/// rank was wrong. These keep the same check at the same cost (the message is built only on
/// failure) and always print it, in every build, through `fatalError`.
@inlinable @inline(__always)
public func precondition(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = String(),
                         file: StaticString = #fileID, line: UInt = #line) {
    if _slowPath(!condition()) { fatalError(message(), file: file, line: line) }
}

/// See `precondition`: stops with its message in every build.
@inlinable @inline(__always)
public func preconditionFailure(_ message: @autoclosure () -> String = String(),
                                file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError(message(), file: file, line: line)
}
