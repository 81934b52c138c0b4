import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

import { modelsRoute, mockFetch, mockXhr } from "../test/fixtures";
import { UploadPage } from "./Upload";

async function renderUpload() {
  window.history.replaceState(null, "", "/upload?model=malaria");
  render(<UploadPage />);
  return (await screen.findByTestId("file-input")) as HTMLInputElement;
}

describe("Upload page", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("refuses a file that is not an image, with a sentence, before sending it", async () => {
    mockFetch(modelsRoute);
    const input = await renderUpload();
    fireEvent.change(input, { target: { files: [new File(["hello"], "notes.txt", { type: "text/plain" })] } });
    const row = await screen.findByText("notes.txt", { selector: ".file-name" });
    const item = row.closest("li")!;
    expect(item.textContent).toContain("This file is not an image.");
    expect(item.querySelector("[data-error-code]")?.getAttribute("data-error-code")).toBe("not_an_image");
    // Nothing to send: the button stays disabled.
    expect((screen.getByRole("button", { name: /screen this image/i }) as HTMLButtonElement).disabled).toBe(true);
  });

  it("takes a DICOM file, whatever type the browser gives it, for the server to check", async () => {
    mockFetch(modelsRoute);
    const input = await renderUpload();
    const files = [
      new File(["DICM"], "chest.dcm", { type: "application/dicom" }),
      new File(["DICM"], "IM000001", { type: "" }),
    ];
    fireEvent.change(input, { target: { files } });
    for (const name of ["chest.dcm", "IM000001"]) {
      const item = (await screen.findByText(name, { selector: ".file-name" })).closest("li")!;
      expect(item.querySelector("[data-error-code]")).toBeNull();
      expect(item.textContent).toContain("Ready to send");
    }
  });

  it("shows the API's refusal (image_too_large) as a sentence", async () => {
    mockFetch(modelsRoute);
    mockXhr(413, { error: { code: "image_too_large", message: "over 20971520 bytes" } });
    const input = await renderUpload();
    fireEvent.change(input, { target: { files: [new File(["png"], "big.png", { type: "image/png" })] } });
    fireEvent.click(await screen.findByRole("button", { name: /screen this image/i }));
    await waitFor(() => expect(screen.getByText(/This image is too large to send/)).toBeTruthy());
    expect(screen.queryByText(/20971520/)).toBeNull();
  });

  it("offers unavailable services but does not let them be chosen", async () => {
    mockFetch(modelsRoute);
    await renderUpload();
    const unavailable = screen.getByRole("radio", { name: /Diabetic retinopathy/ }) as HTMLInputElement;
    expect(unavailable.disabled).toBe(true);
    expect((screen.getByRole("radio", { name: /Malaria/ }) as HTMLInputElement).checked).toBe(true);
  });

  it("shows a thumbnail and asks for the drive's details when several images are chosen", async () => {
    mockFetch(modelsRoute);
    const input = await renderUpload();
    fireEvent.change(input, {
      target: {
        files: [new File(["a"], "a.png", { type: "image/png" }), new File(["b"], "b.png", { type: "image/png" })],
      },
    });
    expect(await screen.findByRole("button", { name: "Send 2 images" })).toBeTruthy();
    expect(screen.getAllByRole("listitem").filter((li) => li.querySelector(".thumb img"))).toHaveLength(2);
    expect(screen.getByLabelText(/Site/)).toBeTruthy();
    expect(screen.getByLabelText(/Operator/)).toBeTruthy();
  });
});
