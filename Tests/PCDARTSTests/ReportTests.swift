// The report's SVG writers on hand-made data: scales, ticks, axes, series and heat-map cells.

import PCDARTS
import XCTest

final class ReportTests: XCTestCase {
  func testLinearScalesMapTheirDomainAndTickAtRoundValues() {
    let y = LinearScale(domain: 0...2, range: (200, 0))
    XCTAssertEqual(y(0), 200)
    XCTAssertEqual(y(2), 0)
    XCTAssertEqual(y(0.5), 150)
    XCTAssertEqual(y.ticks(count: 4), [0, 0.5, 1, 1.5, 2])
    XCTAssertEqual(LinearScale.nice(0.13, 0.87, ticks: 5), 0.0...1.0)
    let memory = LinearScale.nice(409.4, 410.2, ticks: 5)
    XCTAssertEqual(memory.lowerBound, 409.4, accuracy: 1e-9)
    XCTAssertEqual(memory.upperBound, 410.2, accuracy: 1e-9)
    XCTAssertEqual(LinearScale(domain: 3...3, range: (0, 10)).domain, 1.5...4.5, "a flat series still gets an axis")
    XCTAssertEqual(LinearScale(domain: 1...4, range: (0, 1)).ticks(count: 3), [1, 2, 3, 4])
  }

  func testALineChartHasItsAxesTicksSeriesAndLegend() {
    let svg = lineChartSVG(
      id: "chart-x", title: "Loss", xLabel: "epoch", yLabel: "value",
      series: [
        ChartSeries(name: "train", points: [(1, 2.0), (2, 1.5), (3, 1.0)]),
        ChartSeries(name: "valid", points: [(1, 2.2), (2, .nan), (3, 1.4)]),
      ])
    XCTAssertTrue(svg.hasPrefix("<svg id=\"chart-x\""))
    XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2)
    XCTAssertEqual(svg.components(separatedBy: "class=\"axis\"").count - 1, 2)
    for tick in [">1<", ">2<", ">3<", ">1.5<"] { XCTAssertTrue(svg.contains(tick), "no tick \(tick)") }
    XCTAssertTrue(svg.contains(">train<") && svg.contains(">valid<") && svg.contains(">epoch<"))
    // The NaN point is left out: the valid line has 2 points.
    let valid = svg.components(separatedBy: "<polyline").last!
    let points = valid.components(separatedBy: "points=\"")[1].prefix { $0 != "\"" }
    XCTAssertEqual(points.split(separator: " ").count, 2)
    XCTAssertFalse(svg.contains("nan"))
  }

  func testAHeatMapHasOneCellPerValueShadedFromWhiteToDarkBlue() {
    let svg = heatMapSVG(
      id: "heat", title: "α", rowLabels: ["a", "b"], columnLabels: ["x", "y", "z"], values: [[0, 0.5, 1], [1, 1, 0]])
    XCTAssertEqual(svg.components(separatedBy: "class=\"cell\"").count - 1, 6)
    XCTAssertTrue(svg.contains("fill=\"#ffffff\""), "the smallest value is white")
    XCTAssertTrue(svg.contains("fill=\"#08306b\""), "the largest value is dark blue")
    XCTAssertTrue(svg.contains(">0.500<"))
  }

  func testTheEdgeNamesFollowTheCellsEdgeOrder() {
    let report = RunReport(title: "t", settings: [], history: [], architecture: [])
    XCTAssertTrue(report.html.contains("id=\"chart-loss\""))
    XCTAssertFalse(report.html.contains("heatmap-alpha"), "no architecture, no heat map")
  }
}
