// A virtual grid: only the rows and columns in view are in the DOM, so 100,000 runs by
// 1,000 columns scroll as fast as 30 by 10. Rows come from `rowAt(i)` (null while loading).
// Row nodes are pooled and moved (a transform), never made per scroll; their order in the
// DOM is not the order on screen, which aria-rowindex gives (as ARIA asks of virtual grids).
import { el } from './dom.js';

export const ROW = 28;

export class VirtualGrid {
  /**
   * @param {HTMLElement} root  where the grid goes
   * @param {object} opts  {columns: [{key, label, width, num, cell(value, i) -> Node|string,
   *   fill(cellElement, value or null while loading, i) (optional: updates the cell's own
   *   nodes in place)}],
   *   count, itemAt(i) -> {kind: 'row', index} | {kind: 'group', label}, rowAt(index),
   *   onHeader(column, event), onRange(firstIndex, lastIndex), rowClass(index)}
   */
  constructor(root, opts) {
    this.opts = opts;
    this.head = el('div', { class: 'vt-head' });
    this.body = el('div', { class: 'vt-body' });
    this.box = el('div', { class: 'vt', tabindex: 0, role: 'grid' }, this.head, this.body);
    root.append(this.box);
    this.frame = 0;
    // a fixed pool of row nodes, reused as rows scroll in and out of view (moved by a
    // transform, their cells' text replaced): a jump of 1,000 rows creates no node
    this.slots = [];  // {node, pos, key, values, cls, cellsKey}
    this.box.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.box);
    this.setColumns(opts.columns);
    this.setCount(opts.count || 0);
  }

  setColumns(columns) {
    this.columns = columns;
    let left = 0;
    this.lefts = columns.map((c) => { const l = left; left += c.width; return l; });
    this.width = left;
    this.head.style.width = `${left}px`;
    this.body.style.width = `${left}px`;
    this.headerKey = null;
    for (const slot of this.slots) slot.cellsKey = null;  // the same indices, other columns
    this.clear();
    this.schedule();
  }

  /** Draw every row again (their data or selection changed); their nodes are kept. */
  clear() {
    for (const slot of this.slots) slot.key = null;
  }

  setCount(count) {
    this.count = count;
    this.body.style.height = `${count * ROW}px`;
    this.clear();
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  visibleColumns() {
    const x0 = this.box.scrollLeft - 200;
    const x1 = this.box.scrollLeft + this.box.clientWidth + 200;
    const out = [];
    for (let i = 0; i < this.columns.length; i += 1) {
      const l = this.lefts[i];
      if (l + this.columns[i].width >= x0 && l <= x1) out.push(i);
      else if (l > x1) break;
    }
    return out;
  }

  draw() {
    // every layout read first (scroll position, size), then only writes
    const scrollTop = this.box.scrollTop;
    const height = this.box.clientHeight;
    const cols = this.visibleColumns();
    const key = cols.join(',');
    if (key !== this.headerKey) {
      this.headerKey = key;
      this.head.replaceChildren(...cols.map((ci) => {
        const c = this.columns[ci];
        return el('div', {
          class: `vt-cell${c.num ? ' num' : ''}${c.sorted ? ` sorted${c.sorted === 'desc' ? ' desc' : ''}` : ''}`,
          style: { left: `${this.lefts[ci]}px`, width: `${c.width}px` },
          title: c.title || c.label, role: 'columnheader', dataset: { key: c.key },
          onclick: (e) => this.opts.onHeader && this.opts.onHeader(c, e),
        }, c.label);
      }));
    }
    const first = Math.floor(Math.max(0, scrollTop - ROW) / ROW);
    const last = Math.min(this.count - 1, Math.ceil((scrollTop + height) / ROW) + 2);
    const pad = cols.length ? this.lefts[cols[0]] : 0;
    const kept = new Map();
    const free = [];
    for (const slot of this.slots) {
      if (slot.pos >= first && slot.pos <= last && !kept.has(slot.pos)) kept.set(slot.pos, slot);
      else free.push(slot);
    }
    const wanted = [];
    for (let i = first; i <= last; i += 1) {
      const item = this.opts.itemAt(i);
      if (item.kind === 'row') wanted.push(item.index);
      const values = item.kind === 'row' ? this.opts.rowAt(item.index) : item.label;
      const cls = item.kind === 'row' && this.opts.rowClass ? this.opts.rowClass(item.index) : '';
      let slot = kept.get(i);
      if (!slot) {
        slot = free.pop() || this.slot();
        slot.pos = i;
        slot.key = null;
        slot.node.style.transform = `translateY(${i * ROW}px)`;
        slot.node.hidden = false;
      }
      // a row already drawn with the same columns and data is kept as it is
      if (slot.key === key && slot.values === values && slot.cls === cls) continue;
      if (item.kind === 'group') this.group(slot, item.label);
      else this.row(slot, item.index, values, cols, key, pad, cls, i);
      Object.assign(slot, { key, values, cls });
    }
    for (const slot of free) {  // out of view: hidden, kept (cells and all) for the next rows
      if (slot.pos === -1) continue;
      slot.pos = -1;
      slot.node.hidden = true;
      slot.node.className = 'vt-spare';
    }
    if (wanted.length && this.opts.onRange) this.opts.onRange(wanted[0], wanted[wanted.length - 1]);
  }

  slot() {
    const slot = { node: document.createElement('div'), pos: -1, key: null, values: undefined, cls: '', cellsKey: null };
    this.body.append(slot.node);
    this.slots.push(slot);
    return slot;
  }

  group(slot, label) {
    const { node } = slot;
    node.className = 'vt-group';
    node.removeAttribute('role');
    node.removeAttribute('aria-rowindex');
    delete node.dataset.index;
    node.style.width = `${this.width}px`;
    node.style.paddingLeft = '';
    node.textContent = label;
    slot.cellsKey = null;
  }

  row(slot, index, values, cols, key, pad, cls, i) {
    const { node } = slot;
    node.className = cls ? `vt-row ${cls}` : 'vt-row';
    node.setAttribute('role', 'row');
    node.setAttribute('aria-rowindex', String(i + 2));  // the header is row 1
    node.dataset.index = index;
    if (slot.cellsKey !== key) {  // the columns in view changed: the cells' shape too
      node.textContent = '';
      node.style.width = `${this.width}px`;
      node.style.paddingLeft = `${pad}px`;
      for (const ci of cols) {
        const c = this.columns[ci];
        const cell = document.createElement('div');
        cell.className = `vt-cell${c.num ? ' num' : ''}${c.cls ? ` ${c.cls}` : ''}`;
        cell.style.width = `${c.width}px`;
        node.append(cell);
      }
      slot.cellsKey = key;
    }
    let cell = node.firstChild;
    for (const ci of cols) {
      const c = this.columns[ci];
      if (c.fill) {  // the column updates the node its cell holds (values null: loading)
        c.fill(cell, values, index);
        if (cell.title) cell.removeAttribute('title');
        cell = cell.nextSibling;
        continue;
      }
      const v = values === null ? '…' : c.cell(values, index);
      if (v instanceof Node) {
        cell.replaceChildren(v);
        cell.removeAttribute('title');
      } else {
        const text = String(v);
        const t = cell.firstChild;
        if (t && t.nodeType === 3 && !t.nextSibling) { if (t.data !== text) t.data = text; }
        else cell.textContent = text;
        cell.title = text;
      }
      cell = cell.nextSibling;
    }
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.box.remove();
  }
}
