/* The dashboard's charts, drawn with uPlot (vendor/uplot, loaded before this file).
   Each <figure data-chart="ID" data-window="W" data-measure="M"> gets a line chart of
   JSON.parse(#ID)[W].measures[M]: one line per channel over [W].x (epoch seconds). The data
   come in a <script type="application/json"> block, which the Content-Security-Policy allows
   (it is never executed); no inline script. Times are shown in the zone the block names in
   its data-timezone (the TIMEZONE setting), or the browser's. */
(function () {
  "use strict";

  var COLOURS = {
    telegram: "#2456c8", whatsapp: "#1f7a3d", sms: "#9a6200", email: "#7b3fa0",
    manual: "#1f2328", webhook: "#b3261e"
  };
  var SPARE = ["#0f766e", "#a21caf", "#4d7c0f", "#c2410c"];

  function draw(figure, block, zone) {
    var data = block[figure.getAttribute("data-window")];
    if (!data) { return; }
    var lines = data.measures[figure.getAttribute("data-measure")] || {};
    var channels = Object.keys(lines);
    var series = [{}];
    var values = [data.x];
    channels.forEach(function (channel, index) {
      series.push({
        label: channel,
        stroke: COLOURS[channel] || SPARE[index % SPARE.length],
        width: 2,
        points: {show: false}
      });
      values.push(lines[channel]);
    });
    figure.style.margin = "0";
    figure.style.minWidth = "0";
    var width = Math.max(240, figure.clientWidth || 320);
    var options = {
      width: width,
      height: 180,
      series: series,
      axes: [{}, {size: 40}],
      scales: {x: {time: true}},
      legend: {live: false}
    };
    if (zone && uPlot.tzDate) {
      options.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1000), zone); };
    }
    var chart = new uPlot(options, values, figure);
    figure.setAttribute("data-drawn", "true");
    window.addEventListener("resize", function () {
      chart.setSize({width: Math.max(240, figure.clientWidth || 320), height: 180});
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof uPlot === "undefined") { return; }
    var blocks = {};
    document.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      var id = figure.getAttribute("data-chart");
      if (!(id in blocks)) {
        var element = document.getElementById(id);
        blocks[id] = element ? {data: JSON.parse(element.textContent),
                                zone: element.getAttribute("data-timezone")} : null;
      }
      if (blocks[id]) { draw(figure, blocks[id].data, blocks[id].zone); }
    });
  });
}());
