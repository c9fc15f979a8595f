/// Collects range violations while each config struct checks its own values.
struct ConfigValidator {
    /// (key path in snake_case, what is wrong)
    private(set) var violations: [(path: String, message: String)] = []

    mutating func require(_ condition: Bool, _ path: String, _ message: @autoclosure () -> String) {
        if !condition { violations.append((path, message())) }
    }
}
