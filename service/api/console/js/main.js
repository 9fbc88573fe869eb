// The console's entry point: tabs, the API key, the shortcuts dialog, and keys routed to the open view.

import { getKey, setKey } from './api.js';
import { JobView } from './job.js';
import { LiveView } from './live.js';
import { $, showInfo, typing } from './ui.js';

const job = new JobView($('#job-panel'));
const live = new LiveView($('#live-panel'));
let active = 'job';

function activate(name) {
  active = name;
  for (const [tab, panel, on] of [['#tab-job', '#job-panel', name === 'job'], ['#tab-live', '#live-panel', name === 'live']]) {
    $(tab).setAttribute('aria-selected', String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(panel).hidden = !on;
  }
  if (name === 'job') job.drawChart();
}

$('#tab-job').addEventListener('click', () => activate('job'));
$('#tab-live').addEventListener('click', () => activate('live'));
$('.tabs').addEventListener('keydown', (ev) => { // arrow keys move between tabs (the ARIA tabs pattern)
  if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
  ev.preventDefault();
  ev.stopPropagation();
  activate(active === 'job' ? 'live' : 'job');
  $(active === 'job' ? '#tab-job' : '#tab-live').focus();
});

const keyInput = $('#api-key');
keyInput.value = getKey();
$('#key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  setKey(keyInput.value.trim());
  showInfo(keyInput.value.trim() ? 'Key set for this tab.' : 'Key cleared.');
  keyInput.blur();
});

const help = $('#help');
$('#help-open').addEventListener('click', () => help.showModal());

document.addEventListener('keydown', (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev) || help.open) return;
  if (ev.key === '?') { help.showModal(); ev.preventDefault(); return; }
  const k = ev.key.toLowerCase();
  if (k === 'j' && active !== 'job') { activate('job'); ev.preventDefault(); return; }
  if (k === 'l' && active !== 'live') { activate('live'); ev.preventDefault(); return; }
  // Space and arrows on a focused button keep their own meaning (press it, move in a group).
  const onControl = ev.target && ev.target.closest && ev.target.closest('button, [role="tab"], input, select, summary, a');
  if (onControl && [' ', 'Enter', 'ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(ev.key)) return;
  const handled = active === 'job' ? job.key(ev) : live.key(ev);
  if (handled) ev.preventDefault();
});

// For people reading the page source and for the browser tests: the views, nothing more.
window.agss = { job, live };
