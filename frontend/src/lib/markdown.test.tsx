import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { Markdown, isSafeUrl } from "./markdown";

function html(text: string): HTMLElement {
  const { container } = render(<Markdown text={text} />);
  return container;
}

describe("Markdown", () => {
  it("shows markup in the text as text: no element comes from the input", () => {
    const c = html('Hello <script>alert(1)</script> <img src=x onerror="alert(2)"> **bold <b>x</b>**');
    expect(c.querySelector("script")).toBeNull();
    expect(c.querySelector("img")).toBeNull();
    expect(c.querySelector("b")).toBeNull();
    expect(c.textContent).toContain("<script>alert(1)</script>");
    expect(c.querySelector("strong")?.textContent).toBe("bold <b>x</b>");
  });

  it("links only http(s), mailto and anchors", () => {
    const c = html(
      "[ok](https://example.org/a) [bad](javascript:alert(1)) [bad2](JaVa\tScript:alert(1)) [data](data:text/html,x) [repo](../README.md) [mail](mailto:a@b.org)",
    );
    const links = Array.from(c.querySelectorAll("a")).map((a) => a.getAttribute("href"));
    expect(links).toEqual(["https://example.org/a", "mailto:a@b.org"]);
    expect(c.textContent).toContain("bad");
    expect(c.textContent).toContain("repo");
    expect(c.querySelector("a")?.getAttribute("rel")).toBe("noopener noreferrer");
    expect(isSafeUrl(" javascript:alert(1)")).toBe(false);
  });

  it("renders a model card's headings, emphasis, code, lists and tables", () => {
    const c = html(
      [
        "# Tuberculosis — model card",
        "",
        "**Model** `tuberculosis` version `1.0.0`. *Intended use:* screening.",
        "",
        "## Metrics",
        "",
        "| accuracy | sensitivity |",
        "| --- | ---: |",
        "| 76.5% | 92.0% |",
        "",
        "- one",
        "- two with snake_case_name",
        "",
        "1. first",
        "2. second",
      ].join("\n"),
    );
    expect(c.querySelector("h1")?.textContent).toBe("Tuberculosis — model card");
    expect(c.querySelector("h2")?.textContent).toBe("Metrics");
    expect(c.querySelector("p strong")?.textContent).toBe("Model");
    expect(c.querySelector("p em")?.textContent).toBe("Intended use:");
    expect(Array.from(c.querySelectorAll("p code")).map((e) => e.textContent)).toEqual(["tuberculosis", "1.0.0"]);
    expect(Array.from(c.querySelectorAll("th")).map((e) => e.textContent)).toEqual(["accuracy", "sensitivity"]);
    expect(Array.from(c.querySelectorAll("td")).map((e) => e.textContent)).toEqual(["76.5%", "92.0%"]);
    expect((c.querySelectorAll("td")[1] as HTMLElement).style.textAlign).toBe("right");
    expect(Array.from(c.querySelectorAll("ul li")).map((e) => e.textContent)).toEqual(["one", "two with snake_case_name"]);
    expect(c.querySelectorAll("ol li")).toHaveLength(2);
    expect(c.querySelector("em em")).toBeNull();
  });

  it("shifts headings so that a card sits under the page's h1", () => {
    const { container } = render(<Markdown text={"# Card\n\n## Part"} headingOffset={1} />);
    expect(container.querySelector("h2")?.textContent).toBe("Card");
    expect(container.querySelector("h3")?.textContent).toBe("Part");
    expect(container.querySelector("h1")).toBeNull();
  });

  it("keeps fenced code verbatim and renders images as their alt text", () => {
    const c = html("```\n<b>raw</b> **not bold**\n```\n\n![a chart](https://x.org/c.png)");
    expect(c.querySelector("pre code")?.textContent).toBe("<b>raw</b> **not bold**");
    expect(c.querySelector("img")).toBeNull();
    expect(c.textContent).toContain("[image: a chart]");
  });
});
