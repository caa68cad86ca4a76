import LanceCLI

@main
struct Entrypoint {
    static func main() { InspectCommand.main() }
}
