import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { ProbabilityBars } from "./common";

describe("ProbabilityBars", () => {
  it("renders one bar per class with its probability in percent", () => {
    render(
      <ProbabilityBars
        probabilities={[
          { label: "Uninfected", probability: 0.0268 },
          { label: "Parasitized", probability: 0.9732 },
        ]}
        finding="Parasitized"
        threshold={0.7269}
        label="Parasitized"
      />,
    );
    const bars = screen.getAllByRole("meter");
    expect(bars).toHaveLength(2);
    expect(screen.getByTestId("prob-Uninfected").textContent).toBe("2.7%");
    expect(screen.getByTestId("prob-Parasitized").textContent).toBe("97.3%");
    const parasitized = screen.getByRole("meter", { name: "Parasitized probability" });
    expect(parasitized.getAttribute("aria-valuenow")).toBe("97.3");
    expect(parasitized.getAttribute("aria-valuetext")).toBe("97.3%");
    const fill = parasitized.querySelector(".prob-fill") as HTMLElement;
    expect(fill.style.width).toBe("97.32%");
    // The threshold is marked on the finding's bar only.
    expect(parasitized.querySelector(".prob-threshold")).not.toBeNull();
    expect(screen.getByRole("meter", { name: "Uninfected probability" }).querySelector(".prob-threshold")).toBeNull();
  });

  it("keeps bars inside 0..100% whatever the numbers", () => {
    render(<ProbabilityBars probabilities={[{ label: "A", probability: 1.2 }, { label: "B", probability: -0.1 }]} />);
    expect(screen.getByTestId("prob-A").textContent).toBe("100.0%");
    expect(screen.getByTestId("prob-B").textContent).toBe("0.0%");
  });
});
