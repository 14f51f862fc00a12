package authz_test

import (
	"context"
	"fmt"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Finding and clicking controls the way a person does: by their role and
// visible name, as Chromium's own accessibility tree computes them, never
// by CSS. A control that is hidden (in a closed menu) is not found, and a
// name that two controls share is an error, as it would confuse a screen
// reader user too.

// scope is a (role, name) that narrows a search to one element's subtree,
// as in "the link Settings in the group ACME".
type scope struct{ role, name string }

func in(role, name string) scope { return scope{role, name} }

// axFind returns the one element with this role and accessible name on
// the page, within the scopes in order.
func axFind(ctx context.Context, t *chromedp.Target, role, name string, within ...scope) (cdp.BackendNodeID, error) {
	doc, err := document(ctx, t)
	if err != nil {
		return 0, err
	}
	var root cdp.BackendNodeID
	path := ""
	for _, sc := range append(within, scope{role, name}) {
		q := accessibility.QueryAXTreeParams{BackendNodeID: root, Role: sc.role, AccessibleName: sc.name}
		if root == 0 {
			q.ObjectID = doc
		}
		res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, q)
		if err != nil {
			return 0, err
		}
		var found []cdp.BackendNodeID
		for _, n := range res.Nodes {
			if !n.Ignored && n.BackendDOMNodeID != 0 {
				found = append(found, n.BackendDOMNodeID)
			}
		}
		path += fmt.Sprintf(" → %s %q", sc.role, sc.name)
		switch len(found) {
		case 0:
			return 0, fmt.Errorf("no visible%s", path)
		case 1:
			root = found[0]
		default:
			return 0, fmt.Errorf("%d elements match%s", len(found), path)
		}
	}
	return root, nil
}

// document is the page's document as a remote object. (DOM.getDocument
// would do, but it resets the node ids chromedp keeps.)
func document(ctx context.Context, t *chromedp.Target) (runtime.RemoteObjectID, error) {
	res, err := cdp.Call(ctx, t, runtime.Evaluate, runtime.EvaluateParams{Expression: "document"})
	if err != nil {
		return "", err
	}
	if res.ExceptionDetails != nil || res.Result == nil {
		return "", fmt.Errorf("no document")
	}
	return res.Result.ObjectID, nil
}

// axCall runs fn (a JavaScript function with the element as this) on the
// element found.
func axCall[T any](role, name, fn string, within ...scope) chromedp.Action[T] {
	return func(ctx context.Context, t *chromedp.Target) (T, error) {
		var zero T
		id, err := axFind(ctx, t, role, name, within...)
		if err != nil {
			return zero, err
		}
		obj, err := cdp.Call(ctx, t, dom.ResolveNode, dom.ResolveNodeParams{BackendNodeID: id})
		if err != nil {
			return zero, err
		}
		return chromedp.CallFunctionOn[T](fn, func(p *runtime.CallFunctionOnParams) { p.ObjectID = obj.Object.ObjectID })(ctx, t)
	}
}

// axMark tags the element found, so that chromedp can click it with the
// mouse like a person, and the next mark replaces it.
func axMark(role, name string, within ...scope) chromedp.Action[chromedp.Void] {
	mark := axCall[bool](role, name, `function() {
	document.querySelectorAll('[data-test-target]').forEach(el => el.removeAttribute('data-test-target'));
	this.setAttribute('data-test-target', '');
	this.scrollIntoView({block: 'center'});
	return true;
}`, within...)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := mark(ctx, t)
		return chromedp.Void{}, err
	}
}

func axTarget() chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(`[data-test-target]`))
}

// press clicks the control with this role and name, waits for the page it
// leads to, and checks that it is the server's page at path with status.
func (b *chrome) press(role, name, path string, status int, within ...scope) {
	b.t.Helper()
	what := fmt.Sprintf("clicking the %s %q", role, name)
	b.do(what, axMark(role, name, within...))
	resp, err := chromedp.RunResponse(b.ctx, axTarget())
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	b.checkLanded(what, resp, path, status)
}

// toggle clicks a control that changes the page without leaving it (a
// menu, a checkbox).
func (b *chrome) toggle(role, name string, within ...scope) {
	b.t.Helper()
	b.do(fmt.Sprintf("clicking the %s %q", role, name), axMark(role, name, within...), axTarget())
}

// fill types into the text field with this label.
func (b *chrome) fill(label, text string, within ...scope) {
	b.t.Helper()
	b.do(fmt.Sprintf("typing into %q", label), axMark("textbox", label, within...), chromedp.SendKeys(chromedp.CSS(`[data-test-target]`), text))
}

// has reports whether exactly one visible element has this role and name.
func (b *chrome) has(role, name string, within ...scope) bool {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, func(ctx context.Context, t *chromedp.Target) (cdp.BackendNodeID, error) {
		return axFind(ctx, t, role, name, within...)
	})
	return err == nil
}

// property reads a DOM property of the element with this role and name.
func axProperty[T any](b *chrome, role, name, prop string, within ...scope) T {
	b.t.Helper()
	return chromeRun(b, fmt.Sprintf("reading %s of the %s %q", prop, role, name),
		axCall[T](role, name, `function() { return this[`+fmt.Sprintf("%q", prop)+`]; }`, within...))
}

// checkLandmarks checks the page's structure as a screen reader lists it:
// a banner, a main region and a content-info footer, one h1, and on
// console pages a navigation landmark.
func (b *chrome) checkLandmarks(when string, console bool) {
	b.t.Helper()
	count := func(role string) int {
		n, err := chromedp.Run(b.ctx, func(ctx context.Context, t *chromedp.Target) (int, error) {
			doc, err := document(ctx, t)
			if err != nil {
				return 0, err
			}
			res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{ObjectID: doc, Role: role})
			if err != nil {
				return 0, err
			}
			n := 0
			for _, node := range res.Nodes {
				if !node.Ignored {
					n++
				}
			}
			return n, nil
		})
		if err != nil {
			b.t.Fatalf("%s: counting %s: %v", when, role, err)
		}
		return n
	}
	for _, role := range []string{"banner", "main", "contentinfo"} {
		if n := count(role); n != 1 {
			b.t.Errorf("%s: %d %s landmarks, want 1", when, n, role)
		}
	}
	if console && count("navigation") == 0 {
		b.t.Errorf("%s: no navigation landmark", when)
	}
	if n := chromeRun(b, when+": counting h1", chromedp.Evaluate[int](`document.querySelectorAll('h1').length`)); n != 1 {
		b.t.Errorf("%s: %d h1 elements, want 1", when, n)
	}
}

// checkContrast checks WCAG 2 AA contrast for every visible piece of text:
// 4.5:1 against the background it is drawn on, 3:1 for large text.
func (b *chrome) checkContrast(when string) {
	b.t.Helper()
	bad := chromeRun(b, when+": measuring contrast", chromedp.Evaluate[[]string](`(() => {
	const parse = c => { const m = c.match(/[\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
	const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
	const bgOf = el => {
		for (let e = el; e; e = e.parentElement) {
			const c = parse(getComputedStyle(e).backgroundColor);
			if (c.a > 0.5) return c;
		}
		return {r: 255, g: 255, b: 255, a: 1};
	};
	const out = [];
	const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
	const seen = new Set();
	for (let n = walker.nextNode(); n; n = walker.nextNode()) {
		const el = n.parentElement;
		if (!n.textContent.trim() || seen.has(el) || el.closest('.visually-hidden, .skip, [hidden]') || !el.getClientRects().length) continue;
		seen.add(el);
		const st = getComputedStyle(el);
		if (st.visibility === 'hidden') continue;
		const fg = parse(st.color), bg = bgOf(el);
		const hi = Math.max(lum(fg), lum(bg)), lo = Math.min(lum(fg), lum(bg));
		const ratio = (hi + 0.05) / (lo + 0.05);
		const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight) >= 700;
		const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
		if (ratio < need) out.push(el.tagName.toLowerCase() + ' "' + n.textContent.trim().slice(0, 40) + '": ' + ratio.toFixed(2) + ':1, want ' + need);
	}
	return out;
})()`))
	for _, m := range bad {
		b.t.Errorf("%s: contrast too low: %s", when, m)
	}
}
