"""JavaScript the browser test runs in JupyterLab's page (`page.evaluate`), and the texts it looks for.

Used by drive_lab.py; each snippet reads JupyterLab's own state (`window.jupyterapp`, exposed
by `--LabApp.expose_app_in_browser`) or the rendered DOM, and returns plain JSON.
"""
from __future__ import annotations

# The notebook in front, by path, with its cells rendered.
JS_OPENED = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!w && !!w.context && w.context.path === path && !!w.content && w.content.widgets.length > 0
         && !!document.querySelector('.jp-Notebook .jp-Cell');
}"""

JS_OPEN = "(path) => { window.jupyterapp.commands.execute('docmanager:open', {path}); }"

JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !!w.content && w.content.widgets.length > 0;
}"""

JS_RUN_STATE = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const cells = nb.content.widgets.map(c => c.model).filter(m => m.type === 'code');
  const errors = [];
  for (const m of cells) {
    for (let i = 0; i < m.outputs.length; i++) {
      const o = m.outputs.get(i).toJSON();
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  return {code_cells: cells.length, executed: cells.filter(m => m.executionCount !== null).length,
          running: cells.filter(m => m.executionState === 'running').length,
          kernel: kernel ? kernel.status : 'none', errors};
}"""

# Run All is over: every code cell ran and the kernel is idle, or a cell failed (the rest never run).
JS_RUN_DONE = "() => { const s = (" + JS_RUN_STATE + """)();
  return s.errors.length > 0 || (s.executed === s.code_cells && s.running === 0 && s.kernel === 'idle'); }"""

# Every chart drew (a Vega SVG with marks) and no widget is still loading.
JS_SETTLED = """() => {
  const embeds = Array.from(document.querySelectorAll('.jp-OutputArea-output .vega-embed'));
  const drawn = embeds.every(e => e.querySelector('svg.marks'));
  const loading = document.querySelector('.jp-Notebook').innerText.includes('Loading widget');
  return drawn && !loading;
}"""

JS_NEXT_FRAME = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"

JS_KERNEL_PRINT = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, silent: false, store_history: false});
  let out = '';
  f.onIOPub = msg => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await f.done;
  return out;
}"""

JS_SAVE = """async () => { const late = new Promise(r => setTimeout(() => r(false), 15000));
  return await Promise.race([window.jupyterapp.commands.execute('docmanager:save').then(() => true), late]); }"""

# Close the notebook in front and shut its kernel down (the next notebook gets the cores).
JS_CLOSE = """async () => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w) return false;
  // a kernel that never answers its shutdown must not hold the next notebook: 15 s at most
  const late = new Promise(r => setTimeout(() => r(false), 15000));
  if (w.sessionContext) await Promise.race([w.sessionContext.shutdown().then(() => true), late]);
  w.dispose();
  return true;
}"""

# The page height that shows the whole notebook without scrolling (its scroller's content plus the
# page around the scroller), with the scroller back at the top.
JS_FULL_HEIGHT = """() => { const n = window.jupyterapp.shell.currentWidget.content.node;
  const outer = n.closest('.jp-WindowedPanel-outer') || n.querySelector('.jp-WindowedPanel-outer') || n;
  outer.scrollTop = 0;
  return Math.ceil(window.innerHeight - outer.clientHeight + outer.scrollHeight); }"""

# Every Pareto chart point (layer "candidates") with its opacity and the figures in its aria-label.
JS_POINTS = """(root) => Array.from(root.querySelectorAll('g.candidates_marks > path')).map(p => ({
  opacity: parseFloat(p.getAttribute('opacity') || '1'), label: p.getAttribute('aria-label') || ''}))"""

# A static (headless) explorer's heading and its chart: the heading must end above the picture.
JS_HEADINGS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output .optlab-heading')).map(h => {
  const img = h.parentNode.querySelector('img.chart');
  const r = h.getBoundingClientRect();
  return {text: h.innerText.slice(0, 80), bottom: Math.round(r.bottom),
          img_top: img ? Math.round(img.getBoundingClientRect().top) : null};
})"""

JS_TOOLTIP_HIDDEN = "() => !document.querySelector('#vg-tooltip-element.visible')"

BAD_TEXT = ("Loading widget", "Error displaying widget", "Click to show javascript error", "Error loading script",
            "Failed to create view", "model not found", "Failed to initialize")
