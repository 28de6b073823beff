// The drawing pad: pointer events draw on the canvas; while drawing, the canvas goes to /predict as a PNG (one
// request at a time, the latest drawing next), and the answer fills the class, the 10 bars and the 28 x 28 view.
"use strict";

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const digitOut = document.getElementById("digit");
const message = document.getElementById("message");
const bars = [];
let drawing = false, last = null, inFlight = false, pending = false, inked = false;

for (let k = 0; k < 10; k++) {
  const row = document.createElement("li");
  row.dataset.digit = String(k);
  row.innerHTML = `<span class="label">${k}</span><span class="track"><span class="fill"></span></span>` +
    `<span class="value">&ndash;</span>`;
  document.getElementById("bars").append(row);
  bars.push(row);
}

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  pending = false;
  digitOut.textContent = "\u2013";
  seen.clearRect(0, 0, 28, 28);
  for (const row of bars) {
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "\u2013";
  }
  say("Draw a digit on the left: the prediction follows your pen.", false);
}

function say(text, problem) {
  message.textContent = text;
  message.classList.toggle("problem", problem);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

function stroke(from, to) {
  pen.strokeStyle = "#000";
  pen.lineWidth = 18;  // about MNIST's stroke for a digit that fills most of the pad
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  stroke(last, last);
  schedule();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const here = point(event);
  stroke(last, here);
  last = here;
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    schedule();
  });
}
document.getElementById("clear").addEventListener("click", clearPad);

function schedule() {
  if (!inked) return;
  pending = true;
  document.body.dataset.busy = "true";
  if (!inFlight) send();
}

async function send() {
  pending = false;
  inFlight = true;
  try {
    const png = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const response = await fetch("/predict", { method: "POST", headers: { "Content-Type": "image/png" }, body: png });
    const answer = await response.json();
    if (inked) show(answer);
  } catch (error) {
    say(`No answer from the server: ${error}`, true);
  }
  inFlight = false;
  if (pending) {
    send();
  } else {
    document.body.dataset.busy = "false";
  }
}

function show(answer) {
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions) + 1);
  if (answer.error) {
    digitOut.textContent = "?";
    say(answer.error, true);
    return;
  }
  digitOut.textContent = String(answer.class);
  say(`${answer.class} with probability ${(100 * answer.probabilities[answer.class]).toFixed(1)}%`, false);
  answer.probabilities.forEach((p, k) => {
    bars[k].classList.toggle("top", k === answer.class);
    bars[k].querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    bars[k].querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
  });
  const pixels = seen.createImageData(28, 28);
  answer.digit.forEach((v, i) => pixels.data.set([v, v, v, 255], 4 * i));
  seen.putImageData(pixels, 0, 0);
}

fetch("/model").then((response) => response.json()).then((model) => {
  document.getElementById("model").textContent = `${model.network} network, checkpoint ${model.checkpoint}`;
});
clearPad();
