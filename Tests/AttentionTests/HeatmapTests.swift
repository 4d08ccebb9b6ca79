import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
@testable import AttentionExamples
import Attention

/// Heatmaps of attention: terminal colour rules and SVG files that are
/// well-formed XML and labelled.
final class HeatmapTests: XCTestCase {
    private func causalMatrix() throws -> LabelledMatrix {
        let scores = try Tensor<Float>(shape: [2, 2], scalars: [0.5, -.infinity, 0.25, 1])
        return try LabelledMatrix(
            title: "masked <scores> & co", values: scores, rowLabels: ["Your", "journey"], columnLabels: ["Your", "journey"],
            isAttentionMap: true)
    }

    func testColourIsOffForPipesAndNoColorAndChosenByColorterm() {
        XCTAssertEqual(TerminalColour.detect(isTerminal: false, environment: ["COLORTERM": "truecolor"]), .none)
        XCTAssertEqual(TerminalColour.detect(isTerminal: true, environment: ["NO_COLOR": "1"]), .none)
        XCTAssertEqual(TerminalColour.detect(isTerminal: true, environment: ["NO_COLOR": "", "COLORTERM": "truecolor"]), .trueColour,
                       "an empty NO_COLOR does not count (no-color.org)")
        XCTAssertEqual(TerminalColour.detect(isTerminal: true, environment: ["TERM": "dumb"]), .none)
        XCTAssertEqual(TerminalColour.detect(isTerminal: true, environment: ["COLORTERM": "24bit"]), .trueColour)
        XCTAssertEqual(TerminalColour.detect(isTerminal: true, environment: [:]), .palette256)
    }

    func testPlainHeatmapIsLabelledNumbersWithoutEscapes() throws {
        let text = Heatmap.terminal(try causalMatrix(), colour: .none, indent: "")
        XCTAssertEqual(text, [
            "           Your journey",
            "   Your  0.5000    -inf",
            "journey  0.2500  1.0000",
        ].joined(separator: "\n"))
        XCTAssertFalse(text.contains("\u{1B}"))
    }

    func testAHeatmapWiderThanItsWidthIsPrintedInBlocksOfColumnsWithEveryValue() throws {
        let labels = (0..<5).map { "t\($0)" }
        let matrix = try LabelledMatrix(
            title: "wide", values: try Tensor(shape: [2, 5], scalars: (0..<10).map { Float($0) / 10 }),
            rowLabels: ["a", "b"], columnLabels: labels)
        let text = Heatmap.terminal(matrix, colour: .none, indent: "", width: 4 + 2 * 8)  // label 4, two cells
        XCTAssertEqual(text, [
            "columns 1–2 of 5", "          t0      t1", "   a  0.0000  0.1000", "   b  0.5000  0.6000",
            "columns 3–4 of 5", "          t2      t3", "   a  0.2000  0.3000", "   b  0.7000  0.8000",
            "columns 5–5 of 5", "          t4", "   a  0.4000", "   b  0.9000",
        ].joined(separator: "\n"))
        XCTAssertEqual(Heatmap.terminal(matrix, colour: .none, indent: "", width: 100),
                       Heatmap.terminal(matrix, colour: .none, indent: ""), "one block when it fits")
    }

    /// Scores of −10 or below or 100 or above need more than 7 characters: the
    /// cells widen, every number keeps a space before it, and blocks still fit `width`.
    func testLargeValuesWidenTheCellsInsteadOfRunningTogether() throws {
        let matrix = try LabelledMatrix(
            title: "scores", values: try Tensor(shape: [2, 3], scalars: [100.25, -12.5, 0.5, -1234.5, 7, -.infinity]),
            rowLabels: ["a", "b"], columnLabels: ["x", "y", "z"])
        XCTAssertEqual(Heatmap.terminal(matrix, colour: .none, indent: ""), [
            "              x          y          z",
            "   a   100.2500   -12.5000     0.5000",
            "   b -1234.5000     7.0000       -inf",
        ].joined(separator: "\n"))
        let blocks = Heatmap.terminal(matrix, colour: .none, indent: "", width: 4 + 2 * 11)
        XCTAssertEqual(blocks.split(separator: "\n").map(\.count).max(), 4 + 2 * 11)
        XCTAssertTrue(blocks.contains("columns 1–2 of 3"), blocks)
    }

    func testColourHeatmapsUseTrueColourOr256ColourBackgrounds() throws {
        let trueColour = Heatmap.terminal(try causalMatrix(), colour: .trueColour)
        XCTAssertTrue(trueColour.contains("\u{1B}[30;48;2;253;231;37m"), "the largest value is viridis' yellow, with black text")
        XCTAssertTrue(trueColour.contains("48;2;200;200;200m    -inf"), "masked cells are grey")
        XCTAssertTrue(trueColour.contains("grey = masked"))
        let palette = Heatmap.terminal(try causalMatrix(), colour: .palette256)
        XCTAssertTrue(palette.contains("48;5;"))
        XCTAssertFalse(palette.contains("48;2;"))
        XCTAssertTrue(palette.contains("journey"))
    }

    func testSVGIsWellFormedWithTitleLabelsEscapingAndAColourScale() throws {
        let svg = Heatmap.svg(try causalMatrix(), subtitle: "§3.5.1")
        let document = try SVGDocument(svg)
        XCTAssertEqual(document.root, "svg")
        XCTAssertEqual(document.titles.first, "masked <scores> & co", "escaped, then parsed back")
        XCTAssertTrue(document.texts.contains("Your") && document.texts.contains("journey"))
        XCTAssertTrue(document.texts.contains("−∞"), "masked cells are marked")
        XCTAssertTrue(document.texts.contains("masked"), "and explained beside the colour bar")
        XCTAssertTrue(document.texts.contains("query token (row i)"))
        XCTAssertTrue(document.elements.contains("linearGradient"), "a colour bar")
        XCTAssertEqual(document.count(of: "rect") - 3, 4, "one rect per cell, plus background, colour bar and masked swatch")
    }

    func testEveryAttentionMapOfTheChapterHasAWellFormedLabelledSVG() throws {
        let steps = try BookSteps.run(backend: .reference)
        let maps = steps.flatMap(\.matrices).filter(\.isAttentionMap)
        XCTAssertEqual(maps.count, 26, "14 for the book's sentence, 12 MiniLM heads")
        for matrix in maps {
            let document = try SVGDocument(Heatmap.svg(matrix))
            XCTAssertEqual(document.titles.first, matrix.title)
            for label in Set(matrix.rowLabels) { XCTAssertTrue(document.texts.contains(label), "\(matrix.title): \(label)") }
        }
    }
}

/// An SVG parsed with Foundation's XMLParser: fails on malformed XML.
struct SVGDocument {
    var root: String?
    var elements: [String] = []
    var titles: [String] = []
    var texts: Set<String> = []

    func count(of element: String) -> Int { elements.filter { $0 == element }.count }

    init(_ text: String) throws {
        let delegate = Collector()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = delegate
        guard parser.parse() else {
            throw NSError(domain: "SVGDocument", code: 1, userInfo: [
                NSLocalizedDescriptionKey: "not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?") at line \(parser.lineNumber)",
            ])
        }
        root = delegate.elements.first
        elements = delegate.elements
        titles = delegate.titles
        texts = delegate.texts
    }

    private final class Collector: NSObject, XMLParserDelegate {
        var elements: [String] = [], titles: [String] = [], texts: Set<String> = []
        var stack: [String] = [], buffer = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            elements.append(name)
            stack.append(name)
            buffer = ""
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { buffer += string }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if name == "title", stack.count == 2 { titles.append(buffer) }
            if name == "text" { texts.insert(buffer) }
            stack.removeLast()
            buffer = ""
        }
    }
}
